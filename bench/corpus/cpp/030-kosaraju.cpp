#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(30);
    int n = 20000;
    vector<vector<int>> g(n), rg(n);
    for (int i = 0; i < 40000; i++) { int a = rng() % n, b = rng() % n; g[a].push_back(b); rg[b].push_back(a); }
    vector<int> order; vector<char> seen(n, 0);
    for (int s = 0; s < n; s++) {
        if (seen[s]) continue;
        vector<pair<int, int>> st = {{s, 0}}; seen[s] = 1;
        while (!st.empty()) {
            auto& [v, i] = st.back();
            if (i < (int)g[v].size()) { int w = g[v][i++]; if (!seen[w]) { seen[w] = 1; st.push_back({w, 0}); } }
            else { order.push_back(v); st.pop_back(); }
        }
    }
    vector<int> comp(n, -1); int c = 0;
    for (int k = n - 1; k >= 0; k--) {
        int s = order[k]; if (comp[s] >= 0) continue;
        vector<int> st = {s}; comp[s] = c;
        while (!st.empty()) { int v = st.back(); st.pop_back(); for (int w : rg[v]) if (comp[w] < 0) { comp[w] = c; st.push_back(w); } }
        c++;
    }
    // property: the condensation is a DAG whose edges go forward in discovery order
    for (int v = 0; v < n; v++) for (int w : g[v]) if (comp[v] > comp[w]) { cout << "mismatch\n"; return 1; }
    map<int, int> sizes; for (int x : comp) sizes[x]++;
    int big = 0; for (auto& [k, s] : sizes) big = max(big, s);
    cout << "components " << c << " largest " << big << "\n";
}
