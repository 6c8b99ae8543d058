#include <bits/stdc++.h>
using namespace std;
long long inv;
void msort(vector<int>& a, vector<int>& t, int l, int r) {
    if (r - l <= 1) return;
    int m = (l + r) / 2;
    msort(a, t, l, m); msort(a, t, m, r);
    int i = l, j = m, k = l;
    while (i < m && j < r) {
        if (a[i] <= a[j]) t[k++] = a[i++];
        else { inv += m - i; t[k++] = a[j++]; }
    }
    while (i < m) t[k++] = a[i++];
    while (j < r) t[k++] = a[j++];
    for (int x = l; x < r; x++) a[x] = t[x];
}
int main() {
    mt19937 rng(3);
    int n = 3000;
    vector<int> a(n), t(n);
    for (auto& x : a) x = rng() % 5000;
    long long brute = 0;
    for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) brute += a[i] > a[j];
    vector<int> b = a;
    msort(a, t, 0, n);
    sort(b.begin(), b.end());
    if (a != b || inv != brute) { cout << "mismatch" << endl; return 1; }
    cout << "inversions " << inv << endl;
}
