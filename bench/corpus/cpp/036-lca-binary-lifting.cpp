#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(36);
    int n = 20000, LOG = 15;
    vector<int> par(n, 0), depth(n, 0);
    for (int i = 1; i < n; i++) { par[i] = rng() % i; depth[i] = depth[par[i]] + 1; }
    vector<vector<int>> up(LOG, vector<int>(n));
    up[0] = par;
    for (int k = 1; k < LOG; k++) for (int v = 0; v < n; v++) up[k][v] = up[k - 1][up[k - 1][v]];
    auto lca = [&](int a, int b) {
        if (depth[a] < depth[b]) swap(a, b);
        for (int k = LOG - 1; k >= 0; k--) if (depth[a] - (1 << k) >= depth[b]) a = up[k][a];
        if (a == b) return a;
        for (int k = LOG - 1; k >= 0; k--) if (up[k][a] != up[k][b]) { a = up[k][a]; b = up[k][b]; }
        return par[a];
    };
    long long s = 0;
    for (int q = 0; q < 20000; q++) {
        int a = rng() % n, b = rng() % n;
        int x = a, y = b;
        while (x != y) { if (depth[x] >= depth[y]) x = par[x]; else y = par[y]; }
        if (lca(a, b) != x) { cout << "mismatch\n"; return 1; }
        s += x;
    }
    cout << "sum of lcas " << s << "\n";
}
