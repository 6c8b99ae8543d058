#include <bits/stdc++.h>
using namespace std;
mt19937 rng(4);
void qs(vector<int>& a, int l, int r) {
    while (l < r) {
        int p = a[l + rng() % (r - l + 1)];
        int i = l, j = r;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) swap(a[i++], a[j--]);
        }
        if (j - l < r - i) { qs(a, l, j); l = i; } else { qs(a, i, r); r = j; }
    }
}
int main() {
    vector<int> a(200000);
    for (auto& x : a) x = rng() % 1000;
    vector<int> b = a;
    qs(a, 0, (int)a.size() - 1);
    sort(b.begin(), b.end());
    if (a != b) { puts("mismatch"); return 1; }
    printf("median %d\n", a[a.size() / 2]);
}
