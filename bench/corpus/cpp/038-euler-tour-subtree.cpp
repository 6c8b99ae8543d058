#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(38);
    int n = 50000;
    vector<int> par(n, -1); vector<vector<int>> ch(n);
    for (int i = 1; i < n; i++) { par[i] = rng() % i; ch[par[i]].push_back(i); }
    vector<long long> val(n); for (auto& v : val) v = rng() % 1000;
    vector<int> tin(n), tout(n); int t = 0;
    vector<pair<int, int>> st = {{0, 0}};
    while (!st.empty()) {
        auto& [v, i] = st.back();
        if (i == 0) tin[v] = t++;
        if (i < (int)ch[v].size()) st.push_back({ch[v][i++], 0});
        else { tout[v] = t; st.pop_back(); }
    }
    vector<long long> flat(n), pre(n + 1, 0);
    for (int v = 0; v < n; v++) flat[tin[v]] = val[v];
    for (int i = 0; i < n; i++) pre[i + 1] = pre[i] + flat[i];
    // reference: subtree sums bottom-up (children have larger ids)
    vector<long long> sub = val;
    for (int v = n - 1; v > 0; v--) sub[par[v]] += sub[v];
    for (int v = 0; v < n; v++) if (pre[tout[v]] - pre[tin[v]] != sub[v]) { cout << "mismatch\n"; return 1; }
    cout << "root subtree " << sub[0] << "\n";
}
