#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(40);
    int n = 20000;
    vector<vector<pair<int, int>>> adj(n);
    for (int i = 0; i < 80000; i++) adj[rng() % n].push_back({(int)(rng() % n), (int)(rng() % 2)});
    const int INF = 1e9;
    vector<int> d(n, INF); d[0] = 0;
    deque<int> dq; dq.push_back(0);
    while (!dq.empty()) {
        int v = dq.front(); dq.pop_front();
        for (auto [w, c] : adj[v]) if (d[v] + c < d[w]) { d[w] = d[v] + c; if (c) dq.push_back(w); else dq.push_front(w); }
    }
    vector<int> r(n, INF); r[0] = 0;
    priority_queue<pair<int, int>, vector<pair<int, int>>, greater<>> pq; pq.push({0, 0});
    while (!pq.empty()) { auto [dv, v] = pq.top(); pq.pop(); if (dv != r[v]) continue; for (auto [w, c] : adj[v]) if (dv + c < r[w]) { r[w] = dv + c; pq.push({r[w], w}); } }
    if (r != d) { cout << "mismatch\n"; return 1; }
    int mx = 0; for (int x : d) if (x < INF) mx = max(mx, x);
    cout << "max distance " << mx << "\n";
}
