#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(33);
    int n = 60, s = 0, t = n - 1;
    vector<vector<int>> cap(n, vector<int>(n, 0));
    for (int i = 0; i < 400; i++) { int a = rng() % n, b = rng() % n; if (a != b) cap[a][b] += 1 + rng() % 20; }
    auto orig = cap;
    int flow = 0;
    while (true) {
        vector<int> par(n, -1); par[s] = s; queue<int> q; q.push(s);
        while (!q.empty() && par[t] < 0) { int v = q.front(); q.pop(); for (int w = 0; w < n; w++) if (par[w] < 0 && cap[v][w] > 0) { par[w] = v; q.push(w); } }
        if (par[t] < 0) break;
        int aug = INT_MAX;
        for (int v = t; v != s; v = par[v]) aug = min(aug, cap[par[v]][v]);
        for (int v = t; v != s; v = par[v]) { cap[par[v]][v] -= aug; cap[v][par[v]] += aug; }
        flow += aug;
    }
    // max-flow min-cut: the residual-reachable set defines a cut whose capacity equals the flow
    vector<bool> reach(n, false); reach[s] = true; queue<int> q; q.push(s);
    while (!q.empty()) { int v = q.front(); q.pop(); for (int w = 0; w < n; w++) if (!reach[w] && cap[v][w] > 0) { reach[w] = true; q.push(w); } }
    int cut = 0;
    for (int a = 0; a < n; a++) for (int b = 0; b < n; b++) if (reach[a] && !reach[b]) cut += orig[a][b];
    if (cut != flow || reach[t]) { cout << "mismatch\n"; return 1; }
    cout << "max flow " << flow << "\n";
}
