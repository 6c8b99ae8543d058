#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(28);
    int n = 10000;
    vector<int> perm(n); iota(perm.begin(), perm.end(), 0); shuffle(perm.begin(), perm.end(), rng);
    vector<vector<int>> adj(n); vector<int> indeg(n, 0);
    vector<pair<int, int>> edges;
    for (int i = 0; i < 50000; i++) {
        int a = rng() % n, b = rng() % n; if (a == b) continue; if (a > b) swap(a, b);
        adj[perm[a]].push_back(perm[b]); indeg[perm[b]]++; edges.push_back({perm[a], perm[b]});
    }
    priority_queue<int, vector<int>, greater<int>> q;  // lexicographically smallest order
    for (int i = 0; i < n; i++) if (!indeg[i]) q.push(i);
    vector<int> order;
    while (!q.empty()) { int v = q.top(); q.pop(); order.push_back(v); for (int w : adj[v]) if (--indeg[w] == 0) q.push(w); }
    if ((int)order.size() != n) { cout << "cycle?\n"; return 1; }
    vector<int> pos(n); for (int i = 0; i < n; i++) pos[order[i]] = i;
    for (auto [a, b] : edges) if (pos[a] >= pos[b]) { cout << "mismatch\n"; return 1; }
    cout << "first " << order[0] << " last " << order[n - 1] << "\n";
}
