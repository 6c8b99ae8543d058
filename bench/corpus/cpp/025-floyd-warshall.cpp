#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(25);
    int n = 150;
    const int INF = 1e9;
    vector<vector<int>> d(n, vector<int>(n, INF));
    vector<vector<pair<int, int>>> adj(n);
    for (int i = 0; i < n; i++) d[i][i] = 0;
    for (int i = 0; i < 1500; i++) { int a = rng() % n, b = rng() % n, w = 1 + rng() % 100; if (w < d[a][b]) d[a][b] = w; adj[a].push_back({b, w}); }
    for (int k = 0; k < n; k++) for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) if (d[i][k] < INF && d[k][j] < INF) d[i][j] = min(d[i][j], d[i][k] + d[k][j]);
    for (int s = 0; s < n; s += 10) {
        vector<int> r(n, INF); r[s] = 0;
        priority_queue<pair<int, int>, vector<pair<int, int>>, greater<>> pq; pq.push({0, s});
        while (!pq.empty()) { auto [dv, v] = pq.top(); pq.pop(); if (dv != r[v]) continue; for (auto [w, c] : adj[v]) if (dv + c < r[w]) { r[w] = dv + c; pq.push({r[w], w}); } }
        if (r != d[s]) { cout << "mismatch\n"; return 1; }
    }
    long long s = 0; for (auto& r : d) for (int x : r) if (x < INF) s += x;
    cout << "all pairs sum " << s << "\n";
}
