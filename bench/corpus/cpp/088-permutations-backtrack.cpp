#include <bits/stdc++.h>
using namespace std;
int n; vector<int> cur; vector<bool> used; vector<vector<int>> all;
void bt() { if ((int)cur.size() == n) { all.push_back(cur); return; } for (int i = 0; i < n; i++) if (!used[i]) { used[i] = true; cur.push_back(i); bt(); cur.pop_back(); used[i] = false; } }
int main() {
    n = 8; used.assign(n, false); bt();
    vector<int> p(n); iota(p.begin(), p.end(), 0);
    size_t k = 0;
    do { if (k >= all.size() || all[k] != p) { cout << "mismatch\n"; return 1; } k++; } while (next_permutation(p.begin(), p.end()));
    if (k != all.size() || k != 40320) { cout << "mismatch\n"; return 1; }
    // derangements among them, D(8) = 14833
    int der = 0; for (auto& q : all) { bool d = true; for (int i = 0; i < n; i++) if (q[i] == i) d = false; der += d; }
    if (der != 14833) { cout << "mismatch\n"; return 1; }
    cout << "permutations " << k << " derangements " << der << "\n";
}
