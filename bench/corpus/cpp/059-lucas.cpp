#include <bits/stdc++.h>
using namespace std;
int main() {
    const int p = 13;
    int C[p][p] = {};
    for (int n = 0; n < p; n++) { C[n][0] = 1; for (int k = 1; k <= n; k++) C[n][k] = (C[n - 1][k - 1] + C[n - 1][k]) % p; }
    auto lucas = [&](long long n, long long k) { long long r = 1; while (n || k) { int a = n % p, b = k % p; if (b > a) return 0LL; r = r * C[a][b] % p; n /= p; k /= p; } return r; };
    // Pascal's triangle mod p as reference up to 600
    vector<vector<int>> P(600, vector<int>(600, 0));
    for (int n = 0; n < 600; n++) { P[n][0] = 1; for (int k = 1; k <= n; k++) P[n][k] = (P[n - 1][k - 1] + P[n - 1][k]) % p; }
    for (int n = 0; n < 600; n++) for (int k = 0; k <= n; k++) if (P[n][k] != lucas(n, k)) { cout << "mismatch\n"; return 1; }
    long long nonzero = 0; for (int n = 0; n < 600; n++) for (int k = 0; k <= n; k++) nonzero += P[n][k] != 0;
    cout << "C(10^18, 12345) mod 13 = " << lucas(1000000000000000000LL, 12345) << ", nonzero in 600 rows " << nonzero << "\n";
}
