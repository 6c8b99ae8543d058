#include <bits/stdc++.h>
using namespace std;
int n; vector<vector<pair<int, int>>> adj; vector<int> tin, low; int timer_ = 0; set<int> bridges;
void dfs(int v, int pe) {
    tin[v] = low[v] = timer_++;
    for (auto [w, id] : adj[v]) {
        if (id == pe) continue;
        if (tin[w] >= 0) low[v] = min(low[v], tin[w]);
        else { dfs(w, id); low[v] = min(low[v], low[w]); if (low[w] > tin[v]) bridges.insert(id); }
    }
}
int components(int skip, const vector<pair<int, int>>& es) {
    vector<int> p(n); iota(p.begin(), p.end(), 0);
    function<int(int)> f = [&](int x) { return p[x] == x ? x : p[x] = f(p[x]); };
    int c = n;
    for (int i = 0; i < (int)es.size(); i++) if (i != skip && f(es[i].first) != f(es[i].second)) { p[f(es[i].first)] = f(es[i].second); c--; }
    return c;
}
int main() {
    mt19937 rng(31);
    n = 200; adj.assign(n, {});
    vector<pair<int, int>> es;
    for (int i = 0; i < 260; i++) { int a = rng() % n, b = rng() % n; if (a == b) continue; adj[a].push_back({b, (int)es.size()}); adj[b].push_back({a, (int)es.size()}); es.push_back({a, b}); }
    tin.assign(n, -1); low.assign(n, 0);
    for (int v = 0; v < n; v++) if (tin[v] < 0) dfs(v, -1);
    int base = components(-1, es);
    for (int i = 0; i < (int)es.size(); i++) if ((components(i, es) > base) != (bridges.count(i) > 0)) { cout << "mismatch\n"; return 1; }
    cout << "bridges " << bridges.size() << " of " << es.size() << " edges\n";
}
