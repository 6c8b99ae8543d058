#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(41);
    for (int t = 0; t < 100; t++) {
        int n = 1 + rng() % 15, W = rng() % 100;
        vector<int> w(n), v(n);
        for (int i = 0; i < n; i++) { w[i] = 1 + rng() % 30; v[i] = rng() % 100; }
        vector<int> dp(W + 1, 0);
        for (int i = 0; i < n; i++) for (int c = W; c >= w[i]; c--) dp[c] = max(dp[c], dp[c - w[i]] + v[i]);
        int best = 0;
        for (int mask = 0; mask < (1 << n); mask++) { int sw = 0, sv = 0; for (int i = 0; i < n; i++) if (mask >> i & 1) { sw += w[i]; sv += v[i]; } if (sw <= W) best = max(best, sv); }
        if (best != dp[W]) { cout << "mismatch\n"; return 1; }
    }
    cout << "knapsack ok on 100 instances\n";
}
