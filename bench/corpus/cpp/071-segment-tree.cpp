#include <bits/stdc++.h>
using namespace std;
struct Seg { int n; vector<long long> t; Seg(int n) : n(n), t(2 * n, 0) {}
    void set(int i, long long v) { for (t[i += n] = v; i > 1; i >>= 1) t[i >> 1] = t[i] + t[i ^ 1]; }
    long long sum(int l, int r) { long long s = 0; for (l += n, r += n; l < r; l >>= 1, r >>= 1) { if (l & 1) s += t[l++]; if (r & 1) s += t[--r]; } return s; } };
int main() {
    mt19937 rng(71);
    int n = 5000; Seg s(n); vector<long long> a(n, 0);
    long long acc = 0;
    for (int q = 0; q < 100000; q++) {
        if (rng() % 2) { int i = rng() % n; long long v = rng() % 1000; s.set(i, v); a[i] = v; }
        else { int l = rng() % n, r = rng() % n; if (l > r) swap(l, r); r++; long long x = s.sum(l, r); if (q % 100 == 0) { long long b = accumulate(a.begin() + l, a.begin() + r, 0LL); if (b != x) { cout << "mismatch\n"; return 1; } } acc ^= x; }
    }
    cout << "xor of answers " << acc << "\n";
}
