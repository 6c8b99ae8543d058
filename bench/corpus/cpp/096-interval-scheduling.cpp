#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(96);
    for (int t = 0; t < 300; t++) {
        int n = 1 + rng() % 14;
        vector<pair<int, int>> iv(n); for (auto& [s, e] : iv) { s = rng() % 50; e = s + 1 + rng() % 15; }
        auto byEnd = iv; sort(byEnd.begin(), byEnd.end(), [](auto a, auto b) { return a.second < b.second; });
        int cnt = 0, last = INT_MIN; for (auto [s, e] : byEnd) if (s >= last) { cnt++; last = e; }
        int brute = 0;
        for (int mask = 0; mask < (1 << n); mask++) {
            vector<pair<int, int>> ch; for (int i = 0; i < n; i++) if (mask >> i & 1) ch.push_back(iv[i]);
            sort(ch.begin(), ch.end()); bool ok = true; for (size_t i = 1; i < ch.size(); i++) if (ch[i].first < ch[i - 1].second) ok = false;
            if (ok) brute = max(brute, (int)ch.size());
        }
        if (brute != cnt) { cout << "mismatch\n"; return 1; }
    }
    cout << "greedy interval scheduling optimal on 300 cases\n";
}
