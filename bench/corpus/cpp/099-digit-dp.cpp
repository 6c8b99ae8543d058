#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
// Count numbers in [0, N] whose digit sum is divisible by 7.
string S; ll memo[20][200][2]; bool seen[20][200][2];
ll go(int pos, int sum, bool tight) {
    if (pos == (int)S.size()) return sum % 7 == 0;
    if (seen[pos][sum][tight]) return memo[pos][sum][tight];
    ll r = 0; int lim = tight ? S[pos] - '0' : 9;
    for (int d = 0; d <= lim; d++) r += go(pos + 1, sum + d, tight && d == lim);
    seen[pos][sum][tight] = true; return memo[pos][sum][tight] = r;
}
ll count(ll N) { S = to_string(N); memset(seen, 0, sizeof seen); return go(0, 0, true); }
int main() {
    ll brute = 0;
    for (ll x = 0; x <= 2000000; x++) { int s = 0; for (ll y = x; y; y /= 10) s += y % 10; brute += s % 7 == 0; if (x % 99991 == 0 && count(x) != brute) { cout << "mismatch at " << x << "\n"; return 1; } }
    if (count(2000000) != brute) { cout << "mismatch\n"; return 1; }
    cout << "up to 10^18: " << count(1000000000000000000LL) << "\n";
}
