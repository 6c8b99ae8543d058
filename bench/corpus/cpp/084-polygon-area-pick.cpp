#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
int main() {
    mt19937 rng(84);
    int checked = 0;
    for (int t = 0; t < 300; t++) {
        // a random star-shaped lattice polygon around the origin
        int n = 3 + rng() % 10; vector<pair<double, pair<ll, ll>>> v;
        for (int i = 0; i < n; i++) { ll x = (ll)(rng() % 41) - 20, y = (ll)(rng() % 41) - 20; if (x == 0 && y == 0) x = 1; v.push_back({atan2((double)y, (double)x), {x, y}}); }
        sort(v.begin(), v.end());
        // one vertex per direction, and the origin strictly inside (every turn around it positive): a simple polygon
        vector<pair<ll, ll>> p; set<pair<ll, ll>> dirs;
        for (auto& e : v) { auto [x, y] = e.second; ll g = __gcd(llabs(x), llabs(y)); if (dirs.insert({x / g, y / g}).second) p.push_back(e.second); }
        n = p.size(); if (n < 3) continue;
        bool star = true;
        for (int i = 0; i < n; i++) if (p[i].first * p[(i + 1) % n].second - p[(i + 1) % n].first * p[i].second <= 0) star = false;
        if (!star) continue;
        checked++;
        ll a2 = 0, B = 0;
        for (int i = 0; i < n; i++) { auto [x1, y1] = p[i]; auto [x2, y2] = p[(i + 1) % n]; a2 += x1 * y2 - x2 * y1; B += __gcd(llabs(x2 - x1), llabs(y2 - y1)); }
        a2 = llabs(a2);
        if (a2 == 0) continue;
        // count interior lattice points directly with a winding-number test
        ll I = 0;
        for (ll x = -20; x <= 20; x++) for (ll y = -20; y <= 20; y++) {
            bool on = false; int wn = 0;
            for (int i = 0; i < n; i++) {
                auto [x1, y1] = p[i]; auto [x2, y2] = p[(i + 1) % n];
                ll c = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1);
                if (c == 0 && min(x1, x2) <= x && x <= max(x1, x2) && min(y1, y2) <= y && y <= max(y1, y2)) on = true;
                if (y1 <= y) { if (y2 > y && c > 0) wn++; } else if (y2 <= y && c < 0) wn--;
            }
            if (!on && wn != 0) I++;
        }
        // Pick: 2A = 2I + B - 2
        if (a2 != 2 * I + B - 2) { cout << "mismatch\n"; return 1; }
    }
    if (checked < 50) { cout << "too few polygons: " << checked << "\n"; return 1; }
    cout << "Pick's theorem holds on " << checked << " polygons\n";
}
