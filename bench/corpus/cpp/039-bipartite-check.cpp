#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(39);
    int ok = 0, bad = 0;
    for (int t = 0; t < 200; t++) {
        int n = 12;
        vector<vector<int>> adj(n);
        vector<pair<int, int>> es;
        int m = rng() % 16;
        for (int i = 0; i < m; i++) { int a = rng() % n, b = rng() % n; if (a != b) { adj[a].push_back(b); adj[b].push_back(a); es.push_back({a, b}); } }
        vector<int> col(n, -1); bool bip = true;
        for (int s = 0; s < n && bip; s++) if (col[s] < 0) { col[s] = 0; queue<int> q; q.push(s); while (!q.empty() && bip) { int v = q.front(); q.pop(); for (int w : adj[v]) { if (col[w] < 0) { col[w] = col[v] ^ 1; q.push(w); } else if (col[w] == col[v]) bip = false; } } }
        bool brute = false;
        for (int mask = 0; mask < (1 << n) && !brute; mask++) { bool good = true; for (auto [a, b] : es) if ((mask >> a & 1) == (mask >> b & 1)) { good = false; break; } brute = good; }
        if (brute != bip) { cout << "mismatch\n"; return 1; }
        (bip ? ok : bad)++;
    }
    cout << "bipartite " << ok << " not " << bad << "\n";
}
