#include <bits/stdc++.h>
using namespace std;
// Minimum largest segment sum when splitting an array into k parts.
bool feasible(const vector<long long>& a, int k, long long cap) {
    int parts = 1; long long cur = 0;
    for (long long x : a) {
        if (x > cap) return false;
        if (cur + x > cap) { parts++; cur = x; } else cur += x;
    }
    return parts <= k;
}
int main() {
    mt19937 rng(12);
    for (int t = 0; t < 200; t++) {
        int n = 1 + rng() % 12, k = 1 + rng() % n;
        vector<long long> a(n);
        for (auto& x : a) x = rng() % 100;
        long long lo = 0, hi = accumulate(a.begin(), a.end(), 0LL);
        while (lo < hi) { long long m = (lo + hi) / 2; if (feasible(a, k, m)) hi = m; else lo = m + 1; }
        // brute force over all cut masks
        long long best = LLONG_MAX;
        for (int mask = 0; mask < (1 << (n - 1)); mask++) {
            if (__builtin_popcount(mask) > k - 1) continue;
            long long cur = 0, mx = 0;
            for (int i = 0; i < n; i++) { cur += a[i]; if (i == n - 1 || (mask >> i & 1)) { mx = max(mx, cur); cur = 0; } }
            best = min(best, mx);
        }
        if (best != lo) { cout << "mismatch on test " << t << "\n"; return 1; }
    }
    cout << "200 splits ok\n";
}
