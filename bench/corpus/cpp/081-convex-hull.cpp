#include <bits/stdc++.h>
using namespace std;
typedef long long ll; typedef pair<ll, ll> P;
ll cross(P o, P a, P b) { return (a.first - o.first) * (b.second - o.second) - (a.second - o.second) * (b.first - o.first); }
int main() {
    mt19937 rng(81);
    vector<P> pts(3000); for (auto& p : pts) p = {(ll)(rng() % 2001) - 1000, (ll)(rng() % 2001) - 1000};
    sort(pts.begin(), pts.end()); pts.erase(unique(pts.begin(), pts.end()), pts.end());
    int n = pts.size(), k = 0; vector<P> h(2 * n);
    for (int i = 0; i < n; i++) { while (k >= 2 && cross(h[k - 2], h[k - 1], pts[i]) <= 0) k--; h[k++] = pts[i]; }
    for (int i = n - 2, t = k + 1; i >= 0; i--) { while (k >= t && cross(h[k - 2], h[k - 1], pts[i]) <= 0) k--; h[k++] = pts[i]; }
    h.resize(k - 1);
    // every point is inside or on the hull (all cross products non-negative going counter-clockwise)
    for (auto& p : pts) for (size_t i = 0; i < h.size(); i++) if (cross(h[i], h[(i + 1) % h.size()], p) < 0) { cout << "mismatch\n"; return 1; }
    ll area2 = 0; for (size_t i = 0; i < h.size(); i++) area2 += h[i].first * h[(i + 1) % h.size()].second - h[(i + 1) % h.size()].first * h[i].second;
    cout << "hull vertices " << h.size() << " area " << area2 / 2.0 << "\n";
}
