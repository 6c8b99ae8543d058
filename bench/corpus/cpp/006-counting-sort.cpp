#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(6);
    int n = 500000, K = 1000;
    vector<int> a(n);
    for (auto& x : a) x = rng() % K;
    vector<int> cnt(K, 0);
    for (int x : a) cnt[x]++;
    vector<int> out; out.reserve(n);
    for (int v = 0; v < K; v++) out.insert(out.end(), cnt[v], v);
    vector<int> b = a;
    sort(b.begin(), b.end());
    if (out != b) { cout << "mismatch\n"; return 1; }
    int mode = max_element(cnt.begin(), cnt.end()) - cnt.begin();
    cout << "mode " << mode << " count " << cnt[mode] << "\n";
}
