#include <bits/stdc++.h>
using namespace std;
int p[2000];
int f(int x) { return p[x] == x ? x : p[x] = f(p[x]); }
int main() {
    mt19937 rng(26);
    int n = 2000;
    vector<array<int, 3>> es;
    for (int i = 1; i < n; i++) es.push_back({(int)(rng() % 100000), i, (int)(rng() % i)});
    for (int i = 0; i < 20000; i++) es.push_back({(int)(rng() % 100000), (int)(rng() % n), (int)(rng() % n)});
    vector<array<int, 3>> sorted = es;
    sort(sorted.begin(), sorted.end());
    iota(p, p + n, 0);
    long long total = 0; int used = 0;
    for (auto& [w, a, b] : sorted) if (f(a) != f(b)) { p[f(a)] = f(b); total += w; used++; }
    // Prim O(n^2) as reference
    vector<vector<int>> W(n, vector<int>(n, INT_MAX));
    for (auto& [w, a, b] : es) if (a != b) { W[a][b] = min(W[a][b], w); W[b][a] = min(W[b][a], w); }
    vector<int> key(n, INT_MAX); vector<bool> in(n, false); key[0] = 0;
    long long prim = 0;
    for (int it = 0; it < n; it++) {
        int v = -1;
        for (int i = 0; i < n; i++) if (!in[i] && (v < 0 || key[i] < key[v])) v = i;
        in[v] = true; prim += key[v];
        for (int i = 0; i < n; i++) if (!in[i] && W[v][i] < key[i]) key[i] = W[v][i];
    }
    if (used != n - 1 || prim != total) { cout << "mismatch\n"; return 1; }
    cout << "mst weight " << total << "\n";
}
