#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(94); uniform_real_distribution<double> d(-1, 1);
    int n = 200;
    vector<vector<double>> A(n, vector<double>(n)); vector<double> x(n), b(n, 0);
    for (auto& r : A) for (auto& v : r) v = d(rng);
    for (int i = 0; i < n; i++) A[i][i] += n;  // diagonally dominant: well conditioned
    for (auto& v : x) v = d(rng);
    for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) b[i] += A[i][j] * x[j];
    auto M = A; auto y = b;
    for (int c = 0; c < n; c++) {
        int p = c; for (int r = c + 1; r < n; r++) if (fabs(M[r][c]) > fabs(M[p][c])) p = r;
        swap(M[c], M[p]); swap(y[c], y[p]);
        for (int r = c + 1; r < n; r++) { double f = M[r][c] / M[c][c]; for (int k = c; k < n; k++) M[r][k] -= f * M[c][k]; y[r] -= f * y[c]; }
    }
    vector<double> s(n);
    for (int i = n - 1; i >= 0; i--) { double t = y[i]; for (int k = i + 1; k < n; k++) t -= M[i][k] * s[k]; s[i] = t / M[i][i]; }
    double err = 0; for (int i = 0; i < n; i++) err = max(err, fabs(s[i] - x[i]));
    if (err > 1e-9) { cout << "mismatch " << err << "\n"; return 1; }
    printf("solved %dx%d, max error below 1e-9, x[0]=%.6f\n", n, n, s[0]);
}
