#include <bits/stdc++.h>
using namespace std;
int N = 128; long long T[129][129];
void add(int x, int y, long long v) { for (int i = x + 1; i <= N; i += i & -i) for (int j = y + 1; j <= N; j += j & -j) T[i][j] += v; }
long long pre(int x, int y) { long long s = 0; for (int i = x; i > 0; i -= i & -i) for (int j = y; j > 0; j -= j & -j) s += T[i][j]; return s; }
int main() {
    mt19937 rng(74);
    vector<vector<long long>> a(N, vector<long long>(N, 0));
    long long acc = 0;
    for (int q = 0; q < 40000; q++) {
        if (rng() % 3) { int x = rng() % N, y = rng() % N; long long v = rng() % 100; add(x, y, v); a[x][y] += v; }
        else {
            int x = rng() % (N + 1), y = rng() % (N + 1); long long s = pre(x, y);
            if (q % 97 == 0) { long long b = 0; for (int i = 0; i < x; i++) for (int j = 0; j < y; j++) b += a[i][j]; if (b != s) { cout << "mismatch\n"; return 1; } }
            acc += s;
        }
    }
    cout << "checksum " << acc << "\n";
}
