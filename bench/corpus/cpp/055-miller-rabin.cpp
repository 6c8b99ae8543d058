#include <bits/stdc++.h>
using namespace std;
typedef unsigned long long u64;
u64 mulmod(u64 a, u64 b, u64 m) { return (__uint128_t)a * b % m; }
u64 pw(u64 b, u64 e, u64 m) { u64 r = 1; b %= m; while (e) { if (e & 1) r = mulmod(r, b, m); b = mulmod(b, b, m); e >>= 1; } return r; }
bool isPrime(u64 n) {
    if (n < 2) return false;
    for (u64 p : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) if (n % p == 0) return n == p;
    u64 d = n - 1; int s = 0; while (!(d & 1)) { d >>= 1; s++; }
    for (u64 a : {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}) {
        u64 x = pw(a, d, n);
        if (x == 1 || x == n - 1) continue;
        bool comp = true;
        for (int r = 1; r < s; r++) { x = mulmod(x, x, n); if (x == n - 1) { comp = false; break; } }
        if (comp) return false;
    }
    return true;
}
int main() {
    int N = 200000;
    vector<bool> c(N + 1, false);
    for (int i = 2; i * i <= N; i++) if (!c[i]) for (int j = i * i; j <= N; j += i) c[j] = true;
    for (int i = 0; i <= N; i++) if (isPrime(i) != (i >= 2 && !c[i])) { cout << "mismatch at " << i << "\n"; return 1; }
    if (!isPrime(1000000007ULL) || !isPrime(998244353ULL) || isPrime(3215031751ULL) || !isPrime(18446744073709551557ULL)) { cout << "mismatch on known values\n"; return 1; }
    int cnt = 0; for (u64 x = 1000000000000ULL; x < 1000000000000ULL + 10000; x++) cnt += isPrime(x);
    cout << "primes in [1e12, 1e12+1e4): " << cnt << "\n";
}
