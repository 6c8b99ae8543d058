#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(79);
    int n = 100000, LOG = 17;
    vector<int> a(n); for (auto& x : a) x = rng();
    vector<vector<int>> st(LOG + 1, vector<int>(n));
    st[0] = a;
    for (int k = 1; k <= LOG; k++) for (int i = 0; i + (1 << k) <= n; i++) st[k][i] = min(st[k - 1][i], st[k - 1][i + (1 << (k - 1))]);
    auto query = [&](int l, int r) { int k = 31 - __builtin_clz(r - l + 1); return min(st[k][l], st[k][r - (1 << k) + 1]); };
    long long acc = 0;
    for (int q = 0; q < 2000; q++) {
        int l = rng() % n, len = 1 + rng() % 500; int r = min(n - 1, l + len);
        int got = query(l, r);
        if (got != *min_element(a.begin() + l, a.begin() + r + 1)) { cout << "mismatch\n"; return 1; }
        acc += got;
    }
    cout << "sum of minima " << acc << "\n";
}
