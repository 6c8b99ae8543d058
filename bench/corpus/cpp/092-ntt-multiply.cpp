#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
const ll MOD = 998244353, G = 3;
ll pw(ll b, ll e) { ll r = 1; b %= MOD; while (e) { if (e & 1) r = r * b % MOD; b = b * b % MOD; e >>= 1; } return r; }
void ntt(vector<ll>& a, bool inv) {
    int n = a.size();
    for (int i = 1, j = 0; i < n; i++) { int bit = n >> 1; for (; j & bit; bit >>= 1) j ^= bit; j ^= bit; if (i < j) swap(a[i], a[j]); }
    for (int len = 2; len <= n; len <<= 1) {
        ll w = pw(G, (MOD - 1) / len); if (inv) w = pw(w, MOD - 2);
        for (int i = 0; i < n; i += len) { ll wn = 1; for (int j = 0; j < len / 2; j++) { ll u = a[i + j], v = a[i + j + len / 2] * wn % MOD; a[i + j] = (u + v) % MOD; a[i + j + len / 2] = (u - v + MOD) % MOD; wn = wn * w % MOD; } }
    }
    if (inv) { ll ni = pw(n, MOD - 2); for (auto& x : a) x = x * ni % MOD; }
}
int main() {
    mt19937 rng(92);
    int n = 2000, m = 1500;
    vector<ll> a(n), b(m); for (auto& x : a) x = rng() % MOD; for (auto& x : b) x = rng() % MOD;
    int sz = 1; while (sz < n + m) sz <<= 1;
    vector<ll> fa(a), fb(b); fa.resize(sz); fb.resize(sz);
    ntt(fa, false); ntt(fb, false); for (int i = 0; i < sz; i++) fa[i] = fa[i] * fb[i] % MOD; ntt(fa, true);
    vector<ll> naive(n + m - 1, 0);
    for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) naive[i + j] = (naive[i + j] + a[i] * b[j]) % MOD;
    for (int i = 0; i < n + m - 1; i++) if (naive[i] != fa[i]) { cout << "mismatch\n"; return 1; }
    cout << "product coefficient 1000: " << fa[1000] << "\n";
}
