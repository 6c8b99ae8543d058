#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
ll ext(ll a, ll b, ll& x, ll& y) { if (!b) { x = 1; y = 0; return a; } ll x1, y1; ll d = ext(b, a % b, x1, y1); x = y1; y = x1 - (a / b) * y1; return d; }
int main() {
    mt19937_64 rng(54);
    for (int t = 0; t < 100000; t++) {
        ll a = rng() % 1000000000 + 1, b = rng() % 1000000000 + 1, x, y;
        ll d = ext(a, b, x, y);
        if (d != __gcd(a, b) || (__int128)a * x + (__int128)b * y != d) { cout << "mismatch\n"; return 1; }
    }
    // modular inverses mod a prime
    const ll p = 1000000007;
    for (ll a = 1; a < 20000; a++) { ll x, y; ext(a, p, x, y); x = (x % p + p) % p; if (a * x % p != 1) { cout << "inverse mismatch\n"; return 1; } }
    ll x, y; ext(240, 46, x, y);
    cout << "240x + 46y = 2 with x=" << x << " y=" << y << "\n";
}
