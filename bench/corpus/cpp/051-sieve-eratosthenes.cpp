#include <bits/stdc++.h>
using namespace std;
int main() {
    int N = 5000000;
    vector<bool> comp(N + 1, false);
    comp[0] = comp[1] = true;
    for (long long i = 2; i * i <= N; i++) if (!comp[i]) for (long long j = i * i; j <= N; j += i) comp[j] = true;
    int cnt = 0; for (int i = 0; i <= N; i++) cnt += !comp[i];
    if (cnt != 348513) { cout << "mismatch " << cnt << "\n"; return 1; }
    for (int x = 2; x < 3000; x++) { bool p = true; for (int d = 2; d * d <= x; d++) if (x % d == 0) p = false; if (p == comp[x]) { cout << "mismatch at " << x << "\n"; return 1; } }
    cout << "primes up to 5e6: " << cnt << "\n";
}
