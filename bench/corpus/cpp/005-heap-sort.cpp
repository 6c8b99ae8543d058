#include <cstdio>
#include <vector>
#include <algorithm>
#include <random>
using namespace std;
void sift(vector<long long>& a, int i, int n) {
    while (true) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && a[l] > a[m]) m = l;
        if (r < n && a[r] > a[m]) m = r;
        if (m == i) return;
        swap(a[i], a[m]); i = m;
    }
}
int main() {
    mt19937_64 rng(5);
    int n = 100000;
    vector<long long> a(n);
    for (auto& x : a) x = (long long)(rng() % 1000000007) - 500000000;
    vector<long long> b = a;
    for (int i = n / 2 - 1; i >= 0; i--) sift(a, i, n);
    for (int e = n - 1; e > 0; e--) { swap(a[0], a[e]); sift(a, 0, e); }
    sort(b.begin(), b.end());
    if (a != b) { puts("mismatch"); return 1; }
    printf("min %lld max %lld\n", a[0], a[n - 1]);
}
