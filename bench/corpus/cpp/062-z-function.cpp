#include <bits/stdc++.h>
using namespace std;
vector<int> zf(const string& s) {
    int n = s.size(); vector<int> z(n, 0); z[0] = n;
    for (int i = 1, l = 0, r = 0; i < n; i++) {
        if (i < r) z[i] = min(r - i, z[i - l]);
        while (i + z[i] < n && s[z[i]] == s[i + z[i]]) z[i]++;
        if (i + z[i] > r) { l = i; r = i + z[i]; }
    }
    return z;
}
int main() {
    mt19937 rng(62);
    for (int t = 0; t < 200; t++) {
        string s(1 + rng() % 300, 'a'); for (auto& c : s) c = 'a' + rng() % 3;
        auto z = zf(s);
        for (size_t i = 1; i < s.size(); i++) { int k = 0; while (i + k < s.size() && s[k] == s[i + k]) k++; if (k != z[i]) { cout << "mismatch\n"; return 1; } }
    }
    // smallest period of a long string via Z
    string base = "abaabab", s; for (int i = 0; i < 20000; i++) s += base;
    auto z = zf(s); int per = s.size();
    for (int p = 1; p < (int)s.size(); p++) if (p + z[p] == (int)s.size()) { per = p; break; }
    if (per != 7) { cout << "mismatch period " << per << "\n"; return 1; }
    cout << "period " << per << "\n";
}
