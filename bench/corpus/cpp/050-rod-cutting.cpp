#include <cstdio>
#include <vector>
#include <algorithm>
#include <random>
int main() {
    std::mt19937 rng(50);
    int n = 22;
    std::vector<int> price(n + 1, 0);
    for (int i = 1; i <= n; i++) price[i] = price[i - 1] + rng() % 10;
    std::vector<long long> dp(n + 1, 0);
    for (int len = 1; len <= n; len++) for (int c = 1; c <= len; c++) dp[len] = std::max(dp[len], price[c] + dp[len - c]);
    // brute force: every composition of n is a subset of the n-1 cut points
    long long best = 0;
    for (int mask = 0; mask < (1 << (n - 1)); mask++) {
        long long v = 0; int last = 0;
        for (int i = 1; i <= n; i++) if (i == n || (mask >> (i - 1) & 1)) { v += price[i - last]; last = i; }
        best = std::max(best, v);
    }
    if (best != dp[n]) { std::puts("mismatch"); return 1; }
    std::printf("best price %lld\n", dp[n]);
}
