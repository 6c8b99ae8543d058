#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(14);
    // Count pairs i<j with a[i]+a[j] <= T in a sorted array, vs brute force.
    for (int t = 0; t < 50; t++) {
        int n = 500 + rng() % 500;
        vector<int> a(n);
        for (auto& x : a) x = rng() % 1000;
        sort(a.begin(), a.end());
        int T = rng() % 2000;
        long long cnt = 0;
        int i = 0, j = n - 1;
        while (i < j) { if (a[i] + a[j] <= T) { cnt += j - i; i++; } else j--; }
        long long brute = 0;
        for (int x = 0; x < n; x++) for (int y = x + 1; y < n; y++) brute += a[x] + a[y] <= T;
        if (cnt != brute) { cout << "mismatch\n"; return 1; }
    }
    cout << "two pointers ok\n";
}
