#include <bits/stdc++.h>
using namespace std;
vector<int> sa(const string& s) {
    int n = s.size(); vector<int> p(n), c(n), pn(n), cn(n);
    iota(p.begin(), p.end(), 0);
    sort(p.begin(), p.end(), [&](int a, int b) { return s[a] < s[b]; });
    for (int i = 0; i < n; i++) c[i] = s[i];
    for (int k = 1;; k <<= 1) {
        auto key = [&](int i) { return make_pair(c[i], i + k < n ? c[i + k] : -1); };
        sort(p.begin(), p.end(), [&](int a, int b) { return key(a) < key(b); });
        cn[p[0]] = 0;
        for (int i = 1; i < n; i++) cn[p[i]] = cn[p[i - 1]] + (key(p[i]) != key(p[i - 1]));
        c = cn;
        if (c[p[n - 1]] == n - 1) break;
    }
    return p;
}
int main() {
    mt19937 rng(65);
    for (int t = 0; t < 50; t++) {
        string s(1 + rng() % 500, 'a'); for (auto& ch : s) ch = 'a' + rng() % 3;
        auto p = sa(s);
        vector<int> b(s.size()); iota(b.begin(), b.end(), 0);
        sort(b.begin(), b.end(), [&](int x, int y) { return s.compare(x, string::npos, s, y, string::npos) < 0; });
        if (p != b) { cout << "mismatch\n"; return 1; }
    }
    string s(50000, 'a'); for (auto& ch : s) ch = 'a' + rng() % 4;
    auto p = sa(s);
    // Kasai LCP, distinct substrings = n(n+1)/2 - sum lcp
    int n = s.size(); vector<int> rk(n), lcp(n, 0);
    for (int i = 0; i < n; i++) rk[p[i]] = i;
    for (int i = 0, h = 0; i < n; i++) { if (rk[i] == 0) { h = 0; continue; } int j = p[rk[i] - 1]; while (i + h < n && j + h < n && s[i + h] == s[j + h]) h++; lcp[rk[i]] = h; if (h) h--; }
    long long distinct = (long long)n * (n + 1) / 2; for (int x : lcp) distinct -= x;
    cout << "distinct substrings " << distinct << "\n";
}
