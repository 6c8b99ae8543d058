#include <bits/stdc++.h>
using namespace std;
typedef unsigned long long u64;
u64 mm(u64 a, u64 b, u64 m) { return (__uint128_t)a * b % m; }
u64 pw(u64 b, u64 e, u64 m) { u64 r = 1; b %= m; while (e) { if (e & 1) r = mm(r, b, m); b = mm(b, b, m); e >>= 1; } return r; }
bool prime(u64 n) {
    if (n < 2) return false;
    for (u64 p : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) if (n % p == 0) return n == p;
    u64 d = n - 1; int s = 0; while (!(d & 1)) { d >>= 1; s++; }
    for (u64 a : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) { u64 x = pw(a, d, n); if (x == 1 || x == n - 1) continue; bool c = true; for (int r = 1; r < s && c; r++) { x = mm(x, x, n); if (x == n - 1) c = false; } if (c) return false; }
    return true;
}
mt19937_64 rng(56);
u64 rho(u64 n) {
    if (n % 2 == 0) return 2;
    while (true) {
        u64 x = rng() % n, y = x, c = rng() % (n - 1) + 1, d = 1;
        while (d == 1) { x = (mm(x, x, n) + c) % n; y = (mm(y, y, n) + c) % n; y = (mm(y, y, n) + c) % n; d = __gcd(x > y ? x - y : y - x, n); }
        if (d != n) return d;
    }
}
void factor(u64 n, vector<u64>& f) { if (n == 1) return; if (prime(n)) { f.push_back(n); return; } u64 d = rho(n); factor(d, f); factor(n / d, f); }
int main() {
    vector<u64> tests = {600851475143ULL, 1000000016000000063ULL, 9999999967ULL * 3ULL, 1ULL << 40, 123456789012345678ULL};
    for (int i = 0; i < 200; i++) tests.push_back(rng() % 1000000000000ULL + 2);
    u64 sum = 0;
    for (u64 n : tests) {
        vector<u64> f; factor(n, f);
        u64 prod = 1; for (u64 p : f) { if (!prime(p)) { cout << "non-prime factor\n"; return 1; } prod *= p; }
        if (prod != n) { cout << "mismatch for " << n << "\n"; return 1; }
        sum += *max_element(f.begin(), f.end());
    }
    vector<u64> f; factor(600851475143ULL, f); sort(f.begin(), f.end());
    cout << "largest factor of 600851475143: " << f.back() << ", checksum " << sum << "\n";
}
