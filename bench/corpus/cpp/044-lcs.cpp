#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(44);
    auto gen = [&](int n) { string s(n, 'a'); for (auto& c : s) c = 'a' + rng() % 4; return s; };
    string a = gen(2000), b = gen(2000);
    vector<vector<int>> dp(a.size() + 1, vector<int>(b.size() + 1, 0));
    for (size_t i = 1; i <= a.size(); i++) for (size_t j = 1; j <= b.size(); j++)
        dp[i][j] = a[i - 1] == b[j - 1] ? dp[i - 1][j - 1] + 1 : max(dp[i - 1][j], dp[i][j - 1]);
    // reconstruct and verify it is a common subsequence of the stated length
    string lcs; size_t i = a.size(), j = b.size();
    while (i && j) { if (a[i - 1] == b[j - 1]) { lcs += a[i - 1]; i--; j--; } else if (dp[i - 1][j] >= dp[i][j - 1]) i--; else j--; }
    reverse(lcs.begin(), lcs.end());
    auto isSub = [](const string& s, const string& t) { size_t k = 0; for (char c : t) if (k < s.size() && s[k] == c) k++; return k == s.size(); };
    if ((int)lcs.size() != dp[a.size()][b.size()] || !isSub(lcs, a) || !isSub(lcs, b)) { cout << "mismatch\n"; return 1; }
    cout << "lcs length " << lcs.size() << "\n";
}
