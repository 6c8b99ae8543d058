#include <bits/stdc++.h>
using namespace std;
struct E { int a, b; long long w; };
int main() {
    mt19937 rng(24);
    int n = 200;
    vector<E> es;
    vector<long long> pot(n);
    for (auto& p : pot) p = rng() % 1000;
    // Reduced costs w + pot[a] - pot[b] >= 0 keep it free of negative cycles while edges can be negative.
    for (int i = 0; i < 3000; i++) { int a = rng() % n, b = rng() % n; long long w = (long long)(rng() % 50) - pot[a] + pot[b]; es.push_back({a, b, w}); }
    const long long INF = LLONG_MAX / 4;
    vector<long long> d(n, INF); d[0] = 0;
    for (int it = 0; it < n - 1; it++) for (auto& e : es) if (d[e.a] < INF && d[e.a] + e.w < d[e.b]) d[e.b] = d[e.a] + e.w;
    for (auto& e : es) if (d[e.a] < INF && d[e.a] + e.w < d[e.b]) { cout << "negative cycle?\n"; return 1; }
    // reference: Dijkstra on reduced costs
    vector<vector<pair<int, long long>>> adj(n);
    for (auto& e : es) adj[e.a].push_back({e.b, e.w + pot[e.a] - pot[e.b]});
    vector<long long> r(n, INF); r[0] = 0;
    priority_queue<pair<long long, int>, vector<pair<long long, int>>, greater<>> pq; pq.push({0, 0});
    while (!pq.empty()) { auto [dv, v] = pq.top(); pq.pop(); if (dv != r[v]) continue; for (auto [w, c] : adj[v]) if (dv + c < r[w]) { r[w] = dv + c; pq.push({r[w], w}); } }
    for (int v = 0; v < n; v++) { long long back = r[v] < INF ? r[v] - pot[0] + pot[v] : INF; if (back != d[v]) { cout << "mismatch\n"; return 1; } }
    // a negative cycle must be detected
    es.push_back({1, 2, -1000000}); es.push_back({2, 1, -1000000});
    bool neg = false;
    vector<long long> z(n, 0);
    for (int it = 0; it < n; it++) for (auto& e : es) if (z[e.a] + e.w < z[e.b]) { z[e.b] = z[e.a] + e.w; if (it == n - 1) neg = true; }
    if (!neg) { cout << "missed negative cycle\n"; return 1; }
    cout << "d[n-1] = " << d[n - 1] << ", negative cycle detected\n";
}
