#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(21);
    int n = 300;
    vector<string> g(n, string(n, '.'));
    for (auto& r : g) for (auto& c : r) if (rng() % 100 < 25) c = '#';
    g[0][0] = g[n - 1][n - 1] = '.';
    vector<vector<int>> d(n, vector<int>(n, -1));
    queue<pair<int, int>> q; q.push({0, 0}); d[0][0] = 0;
    int dx[] = {1, -1, 0, 0}, dy[] = {0, 0, 1, -1};
    while (!q.empty()) {
        auto [x, y] = q.front(); q.pop();
        for (int k = 0; k < 4; k++) {
            int nx = x + dx[k], ny = y + dy[k];
            if (nx < 0 || ny < 0 || nx >= n || ny >= n || g[nx][ny] == '#' || d[nx][ny] >= 0) continue;
            d[nx][ny] = d[x][y] + 1; q.push({nx, ny});
        }
    }
    // property: every reached cell's distance is at least its Manhattan distance and neighbours differ by 1
    int reached = 0;
    for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) if (d[i][j] >= 0) {
        reached++;
        if (d[i][j] < i + j) { cout << "mismatch\n"; return 1; }
        for (int k = 0; k < 4; k++) { int x = i + dx[k], y = j + dy[k]; if (x >= 0 && y >= 0 && x < n && y < n && d[x][y] >= 0 && abs(d[x][y] - d[i][j]) > 1) { cout << "mismatch\n"; return 1; } }
    }
    cout << "reached " << reached << " corner distance " << d[n - 1][n - 1] << "\n";
}
