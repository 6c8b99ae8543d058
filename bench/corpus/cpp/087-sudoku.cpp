#include <bits/stdc++.h>
using namespace std;
int g[9][9];
bool ok(int r, int c, int v) { for (int i = 0; i < 9; i++) if (g[r][i] == v || g[i][c] == v || g[r / 3 * 3 + i / 3][c / 3 * 3 + i % 3] == v) return false; return true; }
bool solve() {
    int br = -1, bc = -1, bn = 10;
    for (int r = 0; r < 9; r++) for (int c = 0; c < 9; c++) if (!g[r][c]) { int k = 0; for (int v = 1; v <= 9; v++) k += ok(r, c, v); if (k < bn) { bn = k; br = r; bc = c; } }
    if (br < 0) return true;
    for (int v = 1; v <= 9; v++) if (ok(br, bc, v)) { g[br][bc] = v; if (solve()) return true; g[br][bc] = 0; }
    return false;
}
int main() {
    const char* puzzle = "530070000600195000098000060800060003400803001700020006060000280000419005000080079";
    for (int i = 0; i < 81; i++) g[i / 9][i % 9] = puzzle[i] - '0';
    if (!solve()) { cout << "no solution\n"; return 1; }
    for (int i = 0; i < 81; i++) if (puzzle[i] != '0' && g[i / 9][i % 9] != puzzle[i] - '0') { cout << "mismatch\n"; return 1; }
    for (int i = 0; i < 9; i++) { set<int> r, c, b; for (int j = 0; j < 9; j++) { r.insert(g[i][j]); c.insert(g[j][i]); b.insert(g[i / 3 * 3 + j / 3][i % 3 * 3 + j % 3]); } if (r.size() != 9 || c.size() != 9 || b.size() != 9) { cout << "invalid\n"; return 1; } }
    for (int r = 0; r < 9; r++) { for (int c = 0; c < 9; c++) cout << g[r][c]; cout << "\n"; }
}
