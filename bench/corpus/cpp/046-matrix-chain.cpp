#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
vector<ll> d;
map<pair<int, int>, ll> memo;
ll rec(int i, int j) {
    if (i == j) return 0;
    auto key = make_pair(i, j);
    if (memo.count(key)) return memo[key];
    ll best = LLONG_MAX;
    for (int k = i; k < j; k++) best = min(best, rec(i, k) + rec(k + 1, j) + d[i] * d[k + 1] * d[j + 1]);
    return memo[key] = best;
}
int main() {
    mt19937 rng(46);
    for (int t = 0; t < 30; t++) {
        int n = 2 + rng() % 60;
        d.assign(n + 1, 0); for (auto& x : d) x = 1 + rng() % 100;
        vector<vector<ll>> dp(n, vector<ll>(n, 0));
        for (int len = 2; len <= n; len++) for (int i = 0; i + len - 1 < n; i++) {
            int j = i + len - 1; dp[i][j] = LLONG_MAX;
            for (int k = i; k < j; k++) dp[i][j] = min(dp[i][j], dp[i][k] + dp[k + 1][j] + d[i] * d[k + 1] * d[j + 1]);
        }
        memo.clear();
        if (rec(0, n - 1) != dp[0][n - 1]) { cout << "mismatch\n"; return 1; }
        if (t == 29) cout << "last cost " << dp[0][n - 1] << "\n";
    }
}
