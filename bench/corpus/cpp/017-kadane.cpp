#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(17);
    for (int t = 0; t < 300; t++) {
        int n = 1 + rng() % 200;
        vector<long long> a(n);
        for (auto& x : a) x = (long long)(rng() % 201) - 100;
        long long best = a[0], cur = 0;
        for (long long x : a) { cur = max(x, cur + x); best = max(best, cur); }
        long long brute = LLONG_MIN;
        for (int i = 0; i < n; i++) { long long s = 0; for (int j = i; j < n; j++) { s += a[j]; brute = max(brute, s); } }
        if (brute != best) { cout << "mismatch\n"; return 1; }
    }
    cout << "kadane ok on 300 arrays\n";
}
