#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(91);
    int n = 9;
    vector<vector<int>> d(n, vector<int>(n));
    for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) d[i][j] = i == j ? 0 : 1 + rng() % 100;
    const int INF = 1e9;
    vector<vector<int>> dp(1 << n, vector<int>(n, INF)); dp[1][0] = 0;
    for (int m = 1; m < (1 << n); m++) for (int v = 0; v < n; v++) if (dp[m][v] < INF) for (int w = 0; w < n; w++) if (!(m >> w & 1)) dp[m | 1 << w][w] = min(dp[m | 1 << w][w], dp[m][v] + d[v][w]);
    int best = INF; for (int v = 0; v < n; v++) best = min(best, dp[(1 << n) - 1][v] + d[v][0]);
    vector<int> p(n - 1); iota(p.begin(), p.end(), 1); int brute = INF;
    do { int c = d[0][p[0]]; for (int i = 0; i + 1 < n - 1; i++) c += d[p[i]][p[i + 1]]; c += d[p.back()][0]; brute = min(brute, c); } while (next_permutation(p.begin(), p.end()));
    if (brute != best) { cout << "mismatch\n"; return 1; }
    cout << "shortest tour " << best << "\n";
}
