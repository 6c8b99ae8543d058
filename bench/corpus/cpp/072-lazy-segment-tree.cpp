#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
int n; vector<ll> mx, lz;
void push(int v) { for (int c : {2 * v, 2 * v + 1}) { mx[c] += lz[v]; lz[c] += lz[v]; } lz[v] = 0; }
void add(int v, int l, int r, int a, int b, ll x) { if (b <= l || r <= a) return; if (a <= l && r <= b) { mx[v] += x; lz[v] += x; return; } push(v); int m = (l + r) / 2; add(2 * v, l, m, a, b, x); add(2 * v + 1, m, r, a, b, x); mx[v] = max(mx[2 * v], mx[2 * v + 1]); }
ll query(int v, int l, int r, int a, int b) { if (b <= l || r <= a) return LLONG_MIN; if (a <= l && r <= b) return mx[v]; push(v); int m = (l + r) / 2; return max(query(2 * v, l, m, a, b), query(2 * v + 1, m, r, a, b)); }
int main() {
    mt19937 rng(72);
    n = 2000; mx.assign(4 * n, 0); lz.assign(4 * n, 0);
    vector<ll> a(n, 0); ll acc = 0;
    for (int q = 0; q < 20000; q++) {
        int l = rng() % n, r = rng() % n; if (l > r) swap(l, r); r++;
        if (rng() % 2) { ll x = (ll)(rng() % 200) - 100; add(1, 0, n, l, r, x); for (int i = l; i < r; i++) a[i] += x; }
        else { ll got = query(1, 0, n, l, r); if (got != *max_element(a.begin() + l, a.begin() + r)) { cout << "mismatch\n"; return 1; } acc += got; }
    }
    cout << "sum of maxima " << acc << "\n";
}
