#include <bits/stdc++.h>
using namespace std;
typedef long long ll;
struct Pt { ll x, y; };
ll cr(Pt a, Pt b, Pt c) { return (b.x - a.x) * (c.y - a.y) - (b.y - a.y) * (c.x - a.x); }
bool onSeg(Pt a, Pt b, Pt p) { return min(a.x, b.x) <= p.x && p.x <= max(a.x, b.x) && min(a.y, b.y) <= p.y && p.y <= max(a.y, b.y); }
bool inter(Pt a, Pt b, Pt c, Pt d) {
    ll d1 = cr(c, d, a), d2 = cr(c, d, b), d3 = cr(a, b, c), d4 = cr(a, b, d);
    if (((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0))) return true;
    return (!d1 && onSeg(c, d, a)) || (!d2 && onSeg(c, d, b)) || (!d3 && onSeg(a, b, c)) || (!d4 && onSeg(a, b, d));
}
int main() {
    mt19937 rng(83);
    int yes = 0;
    for (int t = 0; t < 3000; t++) {
        Pt p[4]; for (auto& q : p) q = {(ll)(rng() % 7), (ll)(rng() % 7)};
        bool got = inter(p[0], p[1], p[2], p[3]);
        // brute force: sample both segments at rational points with a common denominator
        bool brute = false; const int D = 420;
        for (int i = 0; i <= D && !brute; i++) for (int j = 0; j <= D && !brute; j++) {
            ll x1 = p[0].x * (D - i) + p[1].x * i, y1 = p[0].y * (D - i) + p[1].y * i;
            ll x2 = p[2].x * (D - j) + p[3].x * j, y2 = p[2].y * (D - j) + p[3].y * j;
            brute = x1 == x2 && y1 == y2;
        }
        if (brute && !got) { cout << "mismatch\n"; return 1; }
        yes += got;
    }
    if (!inter({0, 0}, {4, 4}, {0, 4}, {4, 0}) || inter({0, 0}, {1, 1}, {2, 2}, {3, 3}) || !inter({0, 0}, {2, 2}, {2, 2}, {3, 0})) { cout << "mismatch\n"; return 1; }
    cout << "intersecting pairs " << yes << "\n";
}
