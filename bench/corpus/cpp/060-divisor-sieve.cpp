#include <cstdio>
#include <vector>
int main() {
    const int N = 2000000;
    std::vector<int> d(N + 1, 0);
    for (int i = 1; i <= N; i++) for (int j = i; j <= N; j += i) d[j]++;
    for (int n = 1; n <= 5000; n++) { int c = 0; for (int k = 1; k <= n; k++) c += n % k == 0; if (c != d[n]) { std::puts("mismatch"); return 1; } }
    int best = 1; for (int i = 1; i <= N; i++) if (d[i] > d[best]) best = i;
    // sum_{n<=N} d(n) = sum_{k<=N} floor(N/k)
    long long s1 = 0, s2 = 0; for (int i = 1; i <= N; i++) { s1 += d[i]; s2 += N / i; }
    if (s1 != s2) { std::puts("mismatch"); return 1; }
    std::printf("most divisors below 2e6: %d with %d\n", best, d[best]);
}
