#include <bits/stdc++.h>
using namespace std;
struct Dinic {
    struct E { int to; long long c; };
    vector<E> e; vector<vector<int>> g; vector<int> lvl, it;
    Dinic(int n) : g(n), lvl(n), it(n) {}
    void add(int a, int b, long long c) { g[a].push_back(e.size()); e.push_back({b, c}); g[b].push_back(e.size()); e.push_back({a, 0}); }
    bool bfs(int s, int t) { fill(lvl.begin(), lvl.end(), -1); lvl[s] = 0; queue<int> q; q.push(s); while (!q.empty()) { int v = q.front(); q.pop(); for (int id : g[v]) if (e[id].c > 0 && lvl[e[id].to] < 0) { lvl[e[id].to] = lvl[v] + 1; q.push(e[id].to); } } return lvl[t] >= 0; }
    long long dfs(int v, int t, long long f) { if (v == t) return f; for (int& i = it[v]; i < (int)g[v].size(); i++) { int id = g[v][i]; if (e[id].c > 0 && lvl[e[id].to] == lvl[v] + 1) { long long d = dfs(e[id].to, t, min(f, e[id].c)); if (d > 0) { e[id].c -= d; e[id ^ 1].c += d; return d; } } } return 0; }
    long long run(int s, int t) { long long f = 0; while (bfs(s, t)) { fill(it.begin(), it.end(), 0); while (long long d = dfs(s, t, LLONG_MAX)) f += d; } return f; }
};
int main() {
    mt19937 rng(34);
    // Bipartite matching as max flow vs. Kuhn's augmenting paths.
    int L = 300, R = 300;
    vector<vector<int>> adj(L);
    Dinic d(L + R + 2); int s = L + R, t = s + 1;
    for (int i = 0; i < L; i++) { d.add(s, i, 1); for (int k = 0; k < 3; k++) { int j = rng() % R; adj[i].push_back(j); d.add(i, L + j, 1); } }
    for (int j = 0; j < R; j++) d.add(L + j, t, 1);
    long long flow = d.run(s, t);
    vector<int> mt(R, -1);
    function<bool(int, vector<bool>&)> kuhn = [&](int v, vector<bool>& used) { for (int j : adj[v]) { if (used[j]) continue; used[j] = true; if (mt[j] < 0 || kuhn(mt[j], used)) { mt[j] = v; return true; } } return false; };
    int m = 0;
    for (int i = 0; i < L; i++) { vector<bool> used(R, false); m += kuhn(i, used); }
    if (m != flow) { cout << "mismatch\n"; return 1; }
    cout << "matching " << m << "\n";
}
