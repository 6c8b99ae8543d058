#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(2);
    vector<int> a(3000);
    for (auto& x : a) x = rng() % 1000 - 500;
    vector<int> b = a;
    for (int i = 1; i < (int)a.size(); i++) {
        int key = a[i], j = i - 1;
        while (j >= 0 && a[j] > key) { a[j + 1] = a[j]; j--; }
        a[j + 1] = key;
    }
    sort(b.begin(), b.end());
    if (a != b) { cout << "mismatch" << endl; return 1; }
    long long s = 0;
    for (int i = 0; i < (int)a.size(); i++) s += (long long)a[i] * (i + 1);
    cout << "weighted sum " << s << endl;
}
