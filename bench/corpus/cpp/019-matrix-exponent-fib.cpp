#include <bits/stdc++.h>
using namespace std;
typedef unsigned long long u64;
const u64 MOD = 1000000007ULL;
typedef array<array<u64, 2>, 2> M;
M mul(const M& a, const M& b) {
    M c{};
    for (int i = 0; i < 2; i++) for (int j = 0; j < 2; j++) for (int k = 0; k < 2; k++) c[i][j] = (c[i][j] + a[i][k] * b[k][j]) % MOD;
    return c;
}
u64 fib(u64 n) {
    M r{{{1, 0}, {0, 1}}}, b{{{1, 1}, {1, 0}}};
    while (n) { if (n & 1) r = mul(r, b); b = mul(b, b); n >>= 1; }
    return r[0][1];
}
int main() {
    vector<u64> f(5000);
    f[0] = 0; f[1] = 1;
    for (int i = 2; i < 5000; i++) f[i] = (f[i - 1] + f[i - 2]) % MOD;
    for (int i = 0; i < 5000; i++) if (fib(i) != f[i]) { cout << "mismatch at " << i << "\n"; return 1; }
    cout << "fib(10^18) mod p = " << fib(1000000000000000000ULL) << "\n";
}
