#include <bits/stdc++.h>
using namespace std;
vector<int> c; int target; vector<vector<int>> res; vector<int> cur;
void bt(int i, int rem) {
    if (rem == 0) { res.push_back(cur); return; }
    for (int j = i; j < (int)c.size() && c[j] <= rem; j++) { if (j > i && c[j] == c[j - 1]) continue; cur.push_back(c[j]); bt(j + 1, rem - c[j]); cur.pop_back(); }
}
int main() {
    mt19937 rng(90);
    for (int t = 0; t < 100; t++) {
        int n = 1 + rng() % 14; c.assign(n, 0); for (auto& x : c) x = 1 + rng() % 12;
        sort(c.begin(), c.end()); target = 1 + rng() % 30; res.clear(); bt(0, target);
        set<vector<int>> brute;
        for (int mask = 0; mask < (1 << n); mask++) { vector<int> v; int s = 0; for (int i = 0; i < n; i++) if (mask >> i & 1) { v.push_back(c[i]); s += c[i]; } if (s == target) brute.insert(v); }
        if (set<vector<int>>(res.begin(), res.end()) != brute || res.size() != brute.size()) { cout << "mismatch\n"; return 1; }
    }
    cout << "combination sums ok\n";
}
