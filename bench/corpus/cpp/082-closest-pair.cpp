#include <bits/stdc++.h>
using namespace std;
typedef pair<double, double> P;
double best;
void rec(vector<P>& a, int l, int r) {
    if (r - l <= 3) { for (int i = l; i < r; i++) for (int j = i + 1; j < r; j++) best = min(best, hypot(a[i].first - a[j].first, a[i].second - a[j].second)); sort(a.begin() + l, a.begin() + r, [](P x, P y) { return x.second < y.second; }); return; }
    int m = (l + r) / 2; double mx = a[m].first;
    rec(a, l, m); rec(a, m, r);
    inplace_merge(a.begin() + l, a.begin() + m, a.begin() + r, [](P x, P y) { return x.second < y.second; });
    vector<P> strip;
    for (int i = l; i < r; i++) if (fabs(a[i].first - mx) < best) { for (int j = strip.size() - 1; j >= 0 && a[i].second - strip[j].second < best; j--) best = min(best, hypot(a[i].first - strip[j].first, a[i].second - strip[j].second)); strip.push_back(a[i]); }
}
int main() {
    mt19937 rng(82); uniform_real_distribution<double> d(0, 1e6);
    vector<P> pts(4000); for (auto& p : pts) p = {d(rng), d(rng)};
    double brute = 1e18;
    for (size_t i = 0; i < pts.size(); i++) for (size_t j = i + 1; j < pts.size(); j++) brute = min(brute, hypot(pts[i].first - pts[j].first, pts[i].second - pts[j].second));
    sort(pts.begin(), pts.end()); best = 1e18; rec(pts, 0, pts.size());
    if (fabs(best - brute) > 1e-9) { cout << "mismatch\n"; return 1; }
    printf("closest distance %.6f\n", best);
}
