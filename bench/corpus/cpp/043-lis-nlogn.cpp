#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(43);
    for (int t = 0; t < 100; t++) {
        int n = 1 + rng() % 800;
        vector<int> a(n); for (auto& x : a) x = rng() % 500;
        vector<int> tails;
        for (int x : a) { auto it = lower_bound(tails.begin(), tails.end(), x); if (it == tails.end()) tails.push_back(x); else *it = x; }
        vector<int> dp(n, 1); int best = 0;
        for (int i = 0; i < n; i++) { for (int j = 0; j < i; j++) if (a[j] < a[i]) dp[i] = max(dp[i], dp[j] + 1); best = max(best, dp[i]); }
        if (best != (int)tails.size()) { cout << "mismatch\n"; return 1; }
    }
    cout << "lis ok\n";
}
