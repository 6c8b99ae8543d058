#include <bits/stdc++.h>
using namespace std;
typedef long long ll; typedef pair<ll, ll> P;
ll cr(P o, P a, P b) { return (a.first - o.first) * (b.second - o.second) - (a.second - o.second) * (b.first - o.first); }
ll d2(P a, P b) { return (a.first - b.first) * (a.first - b.first) + (a.second - b.second) * (a.second - b.second); }
int main() {
    mt19937 rng(85);
    vector<P> pts(20000); for (auto& p : pts) p = {(ll)(rng() % 100000), (ll)(rng() % 100000)};
    sort(pts.begin(), pts.end()); pts.erase(unique(pts.begin(), pts.end()), pts.end());
    int n = pts.size(), k = 0; vector<P> h(2 * n);
    for (int i = 0; i < n; i++) { while (k >= 2 && cr(h[k - 2], h[k - 1], pts[i]) <= 0) k--; h[k++] = pts[i]; }
    for (int i = n - 2, t = k + 1; i >= 0; i--) { while (k >= t && cr(h[k - 2], h[k - 1], pts[i]) <= 0) k--; h[k++] = pts[i]; }
    h.resize(k - 1); int m = h.size();
    ll best = 0;
    for (int i = 0, j = 1; i < m; i++) {
        while (cr(h[i], h[(i + 1) % m], h[(j + 1) % m]) > cr(h[i], h[(i + 1) % m], h[j])) j = (j + 1) % m;
        best = max({best, d2(h[i], h[j]), d2(h[(i + 1) % m], h[j])});
    }
    ll brute = 0; for (int i = 0; i < m; i++) for (int j = 0; j < m; j++) brute = max(brute, d2(h[i], h[j]));
    if (brute != best) { cout << "mismatch\n"; return 1; }
    cout << "diameter^2 " << best << " over " << m << " hull points\n";
}
