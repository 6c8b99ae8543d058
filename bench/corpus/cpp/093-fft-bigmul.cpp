#include <bits/stdc++.h>
using namespace std;
typedef complex<double> cd;
void fft(vector<cd>& a, bool inv) {
    int n = a.size();
    for (int i = 1, j = 0; i < n; i++) { int bit = n >> 1; for (; j & bit; bit >>= 1) j ^= bit; j ^= bit; if (i < j) swap(a[i], a[j]); }
    for (int len = 2; len <= n; len <<= 1) { double ang = 2 * M_PI / len * (inv ? -1 : 1); cd wl(cos(ang), sin(ang)); for (int i = 0; i < n; i += len) { cd w(1); for (int j = 0; j < len / 2; j++) { cd u = a[i + j], v = a[i + j + len / 2] * w; a[i + j] = u + v; a[i + j + len / 2] = u - v; w *= wl; } } }
    if (inv) for (auto& x : a) x /= n;
}
string mulFFT(const string& x, const string& y) {
    vector<cd> a(x.rbegin(), x.rend()), b(y.rbegin(), y.rend());
    for (auto& c : a) c -= '0'; for (auto& c : b) c -= '0';
    int n = 1; while (n < (int)(x.size() + y.size())) n <<= 1;
    a.resize(n); b.resize(n); fft(a, false); fft(b, false); for (int i = 0; i < n; i++) a[i] *= b[i]; fft(a, true);
    vector<long long> r(n); long long carry = 0;
    for (int i = 0; i < n; i++) { long long v = llround(a[i].real()) + carry; r[i] = v % 10; carry = v / 10; }
    string s; for (int i = n - 1; i >= 0; i--) s += char('0' + r[i]);
    size_t p = s.find_first_not_of('0'); return p == string::npos ? "0" : s.substr(p);
}
string mulNaive(const string& x, const string& y) {
    vector<int> r(x.size() + y.size(), 0);
    for (int i = x.size() - 1; i >= 0; i--) for (int j = y.size() - 1; j >= 0; j--) { int s = (x[i] - '0') * (y[j] - '0') + r[i + j + 1]; r[i + j + 1] = s % 10; r[i + j] += s / 10; }
    string s; for (int d : r) s += char('0' + d); size_t p = s.find_first_not_of('0'); return p == string::npos ? "0" : s.substr(p);
}
int main() {
    mt19937 rng(93);
    string x(1500, '0'), y(1200, '0'); for (auto& c : x) c = '0' + rng() % 10; for (auto& c : y) c = '0' + rng() % 10; x[0] = '7'; y[0] = '3';
    string a = mulFFT(x, y), b = mulNaive(x, y);
    if (a != b) { cout << "mismatch\n"; return 1; }
    cout << "digits " << a.size() << " leading " << a.substr(0, 20) << "\n";
}
