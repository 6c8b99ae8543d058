#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(64);
    for (int t = 0; t < 100; t++) {
        string s(1 + rng() % 400, 'a'); for (auto& c : s) c = 'a' + rng() % 2;
        string u = "#"; for (char c : s) { u += c; u += '#'; }
        int n = u.size(); vector<int> d(n, 0);
        for (int i = 0, l = 0, r = -1; i < n; i++) {
            int k = i > r ? 1 : min(d[l + r - i], r - i + 1);
            while (i - k >= 0 && i + k < n && u[i - k] == u[i + k]) k++;
            d[i] = k--;
            if (i + k > r) { l = i - k; r = i + k; }
        }
        int best = 0; for (int x : d) best = max(best, x - 1);
        int brute = 0;
        for (size_t i = 0; i < s.size(); i++) for (size_t j = i; j < s.size(); j++) { bool p = true; for (size_t a = i, b = j; a < b; a++, b--) if (s[a] != s[b]) { p = false; break; } if (p) brute = max(brute, (int)(j - i + 1)); }
        if (best != brute) { cout << "mismatch\n"; return 1; }
    }
    cout << "manacher ok\n";
}
