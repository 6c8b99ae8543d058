#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
ll ext(ll a, ll b, ll& x, ll& y) { if (!b) { x = 1; y = 0; return a; } ll x1, y1, d = ext(b, a % b, x1, y1); x = y1; y = x1 - a / b * y1; return d; }
// Returns (r, m) with x = r mod m, or m = -1 if inconsistent; moduli need not be coprime.
pair<ll, ll> crt(const vector<ll>& r, const vector<ll>& m) {
    ll R = 0, M = 1;
    for (size_t i = 0; i < r.size(); i++) {
        ll x, y, g = ext(M, m[i], x, y);
        if ((r[i] - R) % g) return {0, -1};
        ll t = (ll)((__int128)((r[i] - R) / g) * x % (m[i] / g));
        R += M * t; M = M / g * m[i]; R = ((R % M) + M) % M;
    }
    return {R, M};
}
int main() {
    mt19937 rng(57);
    int solved = 0;
    for (int t = 0; t < 2000; t++) {
        int k = 1 + rng() % 3;
        vector<ll> m(k), r(k);
        for (int i = 0; i < k; i++) { m[i] = 2 + rng() % 30; r[i] = rng() % m[i]; }
        auto [R, M] = crt(r, m);
        ll L = 1; for (ll x : m) L = L / __gcd(L, x) * x;
        ll brute = -1;
        for (ll x = 0; x < L && brute < 0; x++) { bool ok = true; for (int i = 0; i < k; i++) if (x % m[i] != r[i]) ok = false; if (ok) brute = x; }
        if ((M < 0) != (brute < 0) || (M >= 0 && (R != brute || M != L))) { cout << "mismatch\n"; return 1; }
        solved += M >= 0;
    }
    auto [R, M] = crt({2, 3, 2}, {3, 5, 7});
    cout << "x = " << R << " mod " << M << ", solvable " << solved << " of 2000\n";
}
