#include <iostream>
#include <vector>
#include <random>
#include <algorithm>
#include <functional>
int main() {
    std::mt19937 rng(42);
    for (int t = 0; t < 200; t++) {
        int n = 1 + rng() % 5, W = rng() % 60;
        std::vector<int> w(n), v(n);
        for (int i = 0; i < n; i++) { w[i] = 1 + rng() % 15; v[i] = rng() % 50; }
        std::vector<long long> dp(W + 1, 0);
        for (int c = 1; c <= W; c++) for (int i = 0; i < n; i++) if (w[i] <= c) dp[c] = std::max(dp[c], dp[c - w[i]] + v[i]);
        std::function<long long(int, int)> rec = [&](int i, int cap) -> long long {
            if (i == n) return 0;
            long long best = 0;
            for (int k = 0; k * w[i] <= cap; k++) best = std::max(best, k * (long long)v[i] + rec(i + 1, cap - k * w[i]));
            return best;
        };
        if (rec(0, W) != dp[W]) { std::cout << "mismatch\n"; return 1; }
    }
    std::cout << "unbounded knapsack ok\n";
}
