#include <bits/stdc++.h>
using namespace std;
int main() {
    vector<int> coins = {1, 2, 5, 10, 20, 50, 100, 200};
    int T = 2000;
    vector<long long> ways(T + 1, 0); ways[0] = 1;
    for (int c : coins) for (int s = c; s <= T; s++) ways[s] += ways[s - c];
    if (ways[200] != 73682) { cout << "mismatch: ways(200) = " << ways[200] << "\n"; return 1; }
    vector<int> mn(T + 1, INT_MAX); mn[0] = 0;
    for (int s = 1; s <= T; s++) for (int c : coins) if (c <= s && mn[s - c] != INT_MAX) mn[s] = min(mn[s], mn[s - c] + 1);
    // this coin system is canonical: greedy must agree
    for (int s = 0; s <= T; s++) { int g = 0, r = s; for (int i = coins.size() - 1; i >= 0; i--) { g += r / coins[i]; r %= coins[i]; } if (g != mn[s]) { cout << "mismatch\n"; return 1; } }
    cout << "ways(2000) = " << ways[T] << ", min coins(1999) = " << mn[1999] << "\n";
}
