#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(48);
    for (int t = 0; t < 50; t++) {
        int n = 1 + rng() % 16;
        vector<int> a(n); for (auto& x : a) x = rng() % 200;
        bitset<4001> b; b[0] = 1;
        for (int x : a) b |= b << x;
        vector<bool> brute(4001, false);
        for (int mask = 0; mask < (1 << n); mask++) { int s = 0; for (int i = 0; i < n; i++) if (mask >> i & 1) s += a[i]; brute[s] = true; }
        for (int s = 0; s <= 4000; s++) if (brute[s] != b[s]) { cout << "mismatch\n"; return 1; }
    }
    bitset<100001> big; big[0] = 1;
    for (int i = 0; i < 300; i++) big |= big << (1 + rng() % 300);
    cout << "reachable sums " << big.count() << "\n";
}
