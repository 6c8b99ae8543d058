#include <bits/stdc++.h>
using namespace std;
const long long MOD = 1000000007;
long long pw(long long b, long long e) { long long r = 1; b %= MOD; while (e) { if (e & 1) r = r * b % MOD; b = b * b % MOD; e >>= 1; } return r; }
int main() {
    int N = 1000000;
    vector<long long> f(N + 1), inv(N + 1);
    f[0] = 1; for (int i = 1; i <= N; i++) f[i] = f[i - 1] * i % MOD;
    inv[N] = pw(f[N], MOD - 2); for (int i = N; i > 0; i--) inv[i - 1] = inv[i] * i % MOD;
    auto C = [&](int n, int k) { return k < 0 || k > n ? 0 : f[n] * inv[k] % MOD * inv[n - k] % MOD; };
    vector<vector<long long>> P(500, vector<long long>(500, 0));
    for (int n = 0; n < 500; n++) { P[n][0] = 1; for (int k = 1; k <= n; k++) P[n][k] = (P[n - 1][k - 1] + (k < n ? P[n - 1][k] : 0)) % MOD; }
    for (int n = 0; n < 500; n++) for (int k = 0; k <= n; k++) if (P[n][k] != C(n, k)) { cout << "mismatch\n"; return 1; }
    cout << "C(10^6, 5*10^5) mod p = " << C(N, N / 2) << "\n";
}
