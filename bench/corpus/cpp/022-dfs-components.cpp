#include <bits/stdc++.h>
using namespace std;
struct DSU { vector<int> p; DSU(int n) : p(n) { iota(p.begin(), p.end(), 0); } int f(int x) { return p[x] == x ? x : p[x] = f(p[x]); } void u(int a, int b) { p[f(a)] = f(b); } };
int main() {
    mt19937 rng(22);
    int n = 20000, m = 15000;
    vector<vector<int>> adj(n);
    DSU d(n);
    for (int i = 0; i < m; i++) { int a = rng() % n, b = rng() % n; adj[a].push_back(b); adj[b].push_back(a); d.u(a, b); }
    vector<int> comp(n, -1);
    int c = 0;
    for (int s = 0; s < n; s++) if (comp[s] < 0) {
        vector<int> st = {s}; comp[s] = c;
        while (!st.empty()) { int v = st.back(); st.pop_back(); for (int w : adj[v]) if (comp[w] < 0) { comp[w] = c; st.push_back(w); } }
        c++;
    }
    set<int> roots;
    for (int i = 0; i < n; i++) roots.insert(d.f(i));
    if ((int)roots.size() != c) { cout << "mismatch\n"; return 1; }
    cout << "components " << c << "\n";
}
