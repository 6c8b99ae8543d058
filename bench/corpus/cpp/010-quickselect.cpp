#include <bits/stdc++.h>
using namespace std;
mt19937 rng(10);
int select_kth(vector<int> a, int k) {
    int l = 0, r = a.size() - 1;
    while (true) {
        if (l == r) return a[l];
        int p = a[l + rng() % (r - l + 1)];
        int lt = l, i = l, gt = r;
        while (i <= gt) {
            if (a[i] < p) swap(a[lt++], a[i++]);
            else if (a[i] > p) swap(a[i], a[gt--]);
            else i++;
        }
        if (k < lt) r = lt - 1;
        else if (k > gt) l = gt + 1;
        else return p;
    }
}
int main() {
    vector<int> a(100001);
    for (auto& x : a) x = rng() % 50000;
    vector<int> s = a;
    sort(s.begin(), s.end());
    for (int k : {0, 1, 500, 50000, 99999, 100000}) {
        if (select_kth(a, k) != s[k]) { cout << "mismatch at k=" << k << endl; return 1; }
    }
    cout << "median " << select_kth(a, 50000) << endl;
}
