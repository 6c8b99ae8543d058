#include <bits/stdc++.h>
using namespace std;
typedef unsigned long long u64;
int main() {
    mt19937 rng(68);
    string s(3000, 'a'); for (auto& c : s) c = 'a' + rng() % 2;
    int n = s.size();
    const u64 B = 911382323;
    vector<u64> f(n + 1, 0), r(n + 1, 0), p(n + 1, 1);
    for (int i = 0; i < n; i++) { f[i + 1] = f[i] * B + s[i]; r[i + 1] = r[i] * B + s[n - 1 - i]; p[i + 1] = p[i] * B; }
    auto hf = [&](int l, int len) { return f[l + len] - f[l] * p[len]; };
    auto hr = [&](int l, int len) { int rl = n - l - len; return r[rl + len] - r[rl] * p[len]; };
    long long pals = 0, brute = 0;
    for (int i = 0; i < n; i++) for (int len = 1; i + len <= n && len <= 20; len++) {
        pals += hf(i, len) == hr(i, len);
        bool ok = true; for (int a = i, b = i + len - 1; a < b; a++, b--) if (s[a] != s[b]) { ok = false; break; }
        brute += ok;
    }
    if (pals != brute) { cout << "mismatch\n"; return 1; }
    cout << "palindromic substrings up to length 20: " << pals << "\n";
}
