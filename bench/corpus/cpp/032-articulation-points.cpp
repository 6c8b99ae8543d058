#include <bits/stdc++.h>
using namespace std;
int n; vector<vector<int>> adj; vector<int> tin, low; vector<bool> cut; int t = 0;
void dfs(int v, int p) {
    tin[v] = low[v] = t++; int kids = 0;
    for (int w : adj[v]) {
        if (w == p) continue;
        if (tin[w] >= 0) low[v] = min(low[v], tin[w]);
        else { dfs(w, v); low[v] = min(low[v], low[w]); kids++; if (p >= 0 && low[w] >= tin[v]) cut[v] = true; }
    }
    if (p < 0 && kids > 1) cut[v] = true;
}
int count_components(int removed) {
    vector<bool> s(n, false); int c = 0;
    for (int i = 0; i < n; i++) if (i != removed && !s[i]) { c++; vector<int> st = {i}; s[i] = true; while (!st.empty()) { int v = st.back(); st.pop_back(); for (int w : adj[v]) if (w != removed && !s[w]) { s[w] = true; st.push_back(w); } } }
    return c;
}
int main() {
    mt19937 rng(32);
    n = 150; adj.assign(n, {});
    set<pair<int, int>> seen;
    for (int i = 0; i < 200; i++) { int a = rng() % n, b = rng() % n; if (a == b || seen.count({min(a, b), max(a, b)})) continue; seen.insert({min(a, b), max(a, b)}); adj[a].push_back(b); adj[b].push_back(a); }
    tin.assign(n, -1); low.assign(n, 0); cut.assign(n, false);
    for (int v = 0; v < n; v++) if (tin[v] < 0) dfs(v, -1);
    int base = count_components(-1), k = 0;
    for (int v = 0; v < n; v++) {
        bool isolated = adj[v].empty();
        bool brute = count_components(v) > base - (isolated ? 1 : 0);
        if (brute != cut[v]) { cout << "mismatch at " << v << "\n"; return 1; }
        k += cut[v];
    }
    cout << "articulation points " << k << "\n";
}
