#include <bits/stdc++.h>
using namespace std;
int lower(const vector<int>& a, int x) {
    int lo = 0, hi = a.size();
    while (lo < hi) { int mid = lo + (hi - lo) / 2; if (a[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
}
int main() {
    mt19937 rng(11);
    vector<int> a(100000);
    for (auto& x : a) x = rng() % 1000000;
    sort(a.begin(), a.end());
    long long acc = 0;
    for (int q = 0; q < 200000; q++) {
        int x = rng() % 1000001;
        int r = lower(a, x);
        if (r != lower_bound(a.begin(), a.end(), x) - a.begin()) { cout << "mismatch\n"; return 1; }
        acc += r;
    }
    cout << "sum of positions " << acc << "\n";
}
