#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(37);
    int n = 1500;
    vector<vector<pair<int, int>>> adj(n);
    for (int i = 1; i < n; i++) { int p = rng() % i, w = 1 + rng() % 100; adj[i].push_back({p, w}); adj[p].push_back({i, w}); }
    auto far = [&](int s) {
        vector<long long> d(n, -1); d[s] = 0; vector<int> st = {s};
        while (!st.empty()) { int v = st.back(); st.pop_back(); for (auto [w, c] : adj[v]) if (d[w] < 0) { d[w] = d[v] + c; st.push_back(w); } }
        return d;
    };
    auto d0 = far(0);
    int a = max_element(d0.begin(), d0.end()) - d0.begin();
    auto da = far(a);
    long long diam = *max_element(da.begin(), da.end());
    long long brute = 0;
    for (int s = 0; s < n; s++) { auto d = far(s); brute = max(brute, *max_element(d.begin(), d.end())); }
    if (brute != diam) { cout << "mismatch\n"; return 1; }
    cout << "diameter " << diam << "\n";
}
