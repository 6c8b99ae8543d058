#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(16);
    int n = 300, m = 300;
    vector<vector<int>> g(n, vector<int>(m));
    for (auto& r : g) for (auto& x : r) x = rng() % 100 - 50;
    vector<vector<long long>> P(n + 1, vector<long long>(m + 1, 0));
    for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) P[i + 1][j + 1] = g[i][j] + P[i][j + 1] + P[i + 1][j] - P[i][j];
    long long total = 0;
    for (int q = 0; q < 2000; q++) {
        int r1 = rng() % n, r2 = rng() % n, c1 = rng() % m, c2 = rng() % m;
        if (r1 > r2) swap(r1, r2);
        if (c1 > c2) swap(c1, c2);
        long long s = P[r2 + 1][c2 + 1] - P[r1][c2 + 1] - P[r2 + 1][c1] + P[r1][c1];
        if (q % 50 == 0) {
            long long b = 0;
            for (int i = r1; i <= r2; i++) for (int j = c1; j <= c2; j++) b += g[i][j];
            if (b != s) { cout << "mismatch\n"; return 1; }
        }
        total += s;
    }
    cout << "total " << total << "\n";
}
