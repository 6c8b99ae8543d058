#include <bits/stdc++.h>
using namespace std;
int lcs(const string& a, const string& b) {
    vector<vector<int>> dp(a.size() + 1, vector<int>(b.size() + 1, 0));
    for (size_t i = 1; i <= a.size(); i++) for (size_t j = 1; j <= b.size(); j++) dp[i][j] = a[i - 1] == b[j - 1] ? dp[i - 1][j - 1] + 1 : max(dp[i - 1][j], dp[i][j - 1]);
    return dp[a.size()][b.size()];
}
int main() {
    mt19937 rng(49);
    for (int t = 0; t < 60; t++) {
        string s(1 + rng() % 300, 'a');
        for (auto& c : s) c = 'a' + rng() % 5;
        int n = s.size();
        vector<vector<int>> dp(n, vector<int>(n, 0));
        for (int i = n - 1; i >= 0; i--) { dp[i][i] = 1; for (int j = i + 1; j < n; j++) dp[i][j] = s[i] == s[j] ? dp[i + 1][j - 1] + 2 : max(dp[i + 1][j], dp[i][j - 1]); }
        string r(s.rbegin(), s.rend());
        if (dp[0][n - 1] != lcs(s, r)) { cout << "mismatch\n"; return 1; }
    }
    cout << "palindromic subsequences ok\n";
}
