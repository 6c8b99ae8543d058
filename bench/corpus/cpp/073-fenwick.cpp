#include <bits/stdc++.h>
using namespace std;
struct BIT { int n; vector<long long> t; BIT(int n) : n(n), t(n + 1, 0) {} void add(int i, long long v) { for (i++; i <= n; i += i & -i) t[i] += v; } long long pre(int i) { long long s = 0; for (; i > 0; i -= i & -i) s += t[i]; return s; } };
int main() {
    mt19937 rng(73);
    // count inversions with a Fenwick tree vs O(n^2)
    int n = 4000; vector<int> a(n); for (auto& x : a) x = rng() % 1000;
    BIT b(1000); long long inv = 0;
    for (int i = n - 1; i >= 0; i--) { inv += b.pre(a[i]); b.add(a[i], 1); }
    long long brute = 0; for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) brute += a[i] > a[j];
    if (inv != brute) { cout << "mismatch\n"; return 1; }
    cout << "inversions " << inv << "\n";
}
