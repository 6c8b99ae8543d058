#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
int main() {
    mt19937 rng(23);
    int n = 400, m = 4000;
    vector<vector<pair<int, int>>> adj(n);
    vector<vector<ll>> W(n, vector<ll>(n, LLONG_MAX / 4));
    for (int i = 0; i < n; i++) W[i][i] = 0;
    for (int i = 0; i < m; i++) {
        int a = rng() % n, b = rng() % n, w = 1 + rng() % 1000;
        adj[a].push_back({b, w}); W[a][b] = min(W[a][b], (ll)w);
    }
    vector<ll> d(n, LLONG_MAX / 4); d[0] = 0;
    priority_queue<pair<ll, int>, vector<pair<ll, int>>, greater<>> pq; pq.push({0, 0});
    while (!pq.empty()) {
        auto [dv, v] = pq.top(); pq.pop();
        if (dv != d[v]) continue;
        for (auto [w, c] : adj[v]) if (d[v] + c < d[w]) { d[w] = d[v] + c; pq.push({d[w], w}); }
    }
    // Bellman-Ford style relaxation to a fixed point on the matrix as reference
    vector<ll> r(n, LLONG_MAX / 4); r[0] = 0;
    for (bool ch = true; ch;) { ch = false; for (int a = 0; a < n; a++) if (r[a] < LLONG_MAX / 4) for (int b = 0; b < n; b++) if (r[a] + W[a][b] < r[b]) { r[b] = r[a] + W[a][b]; ch = true; } }
    if (r != d) { cout << "mismatch\n"; return 1; }
    ll s = 0; for (ll x : d) if (x < LLONG_MAX / 4) s += x;
    cout << "sum of distances " << s << "\n";
}
