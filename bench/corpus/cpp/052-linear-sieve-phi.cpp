#include <bits/stdc++.h>
using namespace std;
int main() {
    int N = 1000000;
    vector<int> phi(N + 1), lp(N + 1, 0), primes;
    phi[1] = 1;
    for (int i = 2; i <= N; i++) {
        if (!lp[i]) { lp[i] = i; phi[i] = i - 1; primes.push_back(i); }
        for (int p : primes) {
            if (p > lp[i] || (long long)i * p > N) break;
            lp[i * p] = p;
            phi[i * p] = (p == lp[i]) ? phi[i] * p : phi[i] * (p - 1);
        }
    }
    for (int n = 1; n <= 2000; n++) { int c = 0; for (int k = 1; k <= n; k++) c += __gcd(n, k) == 1; if (c != phi[n]) { cout << "mismatch at " << n << "\n"; return 1; } }
    // sum over divisors of phi(d) = n
    for (int n = 1; n <= 20000; n++) { long long s = 0; for (int d = 1; d * d <= n; d++) if (n % d == 0) { s += phi[d]; if (d * d != n) s += phi[n / d]; } if (s != n) { cout << "mismatch\n"; return 1; } }
    long long total = 0; for (int i = 1; i <= N; i++) total += phi[i];
    cout << "sum phi " << total << "\n";
}
