#include <bits/stdc++.h>
using namespace std;
struct DSU { vector<int> p, sz; DSU(int n) : p(n), sz(n, 1) { iota(p.begin(), p.end(), 0); }
    int f(int x) { while (p[x] != x) { p[x] = p[p[x]]; x = p[x]; } return x; }
    bool u(int a, int b) { a = f(a); b = f(b); if (a == b) return false; if (sz[a] < sz[b]) swap(a, b); p[b] = a; sz[a] += sz[b]; return true; } };
int main() {
    mt19937 rng(75);
    int n = 2000; DSU d(n); vector<int> label(n); iota(label.begin(), label.end(), 0);
    int merges = 0;
    for (int q = 0; q < 20000; q++) {
        int a = rng() % n, b = rng() % n;
        if (rng() % 2) { bool m = d.u(a, b); if (m != (label[a] != label[b])) { cout << "mismatch\n"; return 1; } if (m) { int la = label[a], lb = label[b]; for (int& l : label) if (l == lb) l = la; merges++; } }
        else if ((d.f(a) == d.f(b)) != (label[a] == label[b])) { cout << "mismatch\n"; return 1; }
    }
    cout << "merges " << merges << " sets " << n - merges << "\n";
}
