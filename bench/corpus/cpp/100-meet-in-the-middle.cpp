#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
int main() {
    mt19937 rng(100);
    // Number of subsets with sum <= T, n = 36 by meet in the middle; checked against brute force for n = 20.
    auto mitm = [](const vector<ll>& a, ll T) {
        int h = a.size() / 2;
        auto sums = [](const vector<ll>& v) { vector<ll> s = {0}; for (ll x : v) { size_t k = s.size(); for (size_t i = 0; i < k; i++) s.push_back(s[i] + x); } sort(s.begin(), s.end()); return s; };
        auto L = sums(vector<ll>(a.begin(), a.begin() + h)), R = sums(vector<ll>(a.begin() + h, a.end()));
        ll c = 0; for (ll x : L) c += upper_bound(R.begin(), R.end(), T - x) - R.begin();
        return c;
    };
    for (int t = 0; t < 5; t++) {
        vector<ll> a(20); for (auto& x : a) x = rng() % 1000; ll T = rng() % 10000;
        ll brute = 0; for (int m = 0; m < (1 << 20); m++) { ll s = 0; for (int i = 0; i < 20; i++) if (m >> i & 1) s += a[i]; brute += s <= T; }
        if (brute != mitm(a, T)) { cout << "mismatch\n"; return 1; }
    }
    vector<ll> a(36); for (auto& x : a) x = rng() % 1000000;
    cout << "subsets of 36 with sum <= 5e6: " << mitm(a, 5000000) << "\n";
}
