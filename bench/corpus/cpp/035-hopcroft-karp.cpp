#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(35);
    int L = 2000, R = 2000;
    vector<vector<int>> adj(L);
    for (int i = 0; i < L; i++) for (int k = 0; k < 2; k++) adj[i].push_back(rng() % R);
    vector<int> ml(L, -1), mr(R, -1), dist(L);
    auto bfs = [&]() {
        queue<int> q; bool found = false;
        for (int i = 0; i < L; i++) { if (ml[i] < 0) { dist[i] = 0; q.push(i); } else dist[i] = -1; }
        while (!q.empty()) { int v = q.front(); q.pop(); for (int j : adj[v]) { int w = mr[j]; if (w < 0) found = true; else if (dist[w] < 0) { dist[w] = dist[v] + 1; q.push(w); } } }
        return found;
    };
    function<bool(int)> dfs = [&](int v) {
        for (int j : adj[v]) { int w = mr[j]; if (w < 0 || (dist[w] == dist[v] + 1 && dfs(w))) { ml[v] = j; mr[j] = v; return true; } }
        dist[v] = -1; return false;
    };
    int m = 0;
    while (bfs()) for (int i = 0; i < L; i++) if (ml[i] < 0 && dfs(i)) m++;
    // check: it is a matching, and there is no augmenting path left (Berge)
    for (int i = 0; i < L; i++) if (ml[i] >= 0 && mr[ml[i]] != i) { cout << "mismatch\n"; return 1; }
    vector<int> seen(R, 0);
    function<bool(int)> aug = [&](int v) { for (int j : adj[v]) { if (seen[j]) continue; seen[j] = 1; if (mr[j] < 0 || aug(mr[j])) return true; } return false; };
    for (int i = 0; i < L; i++) if (ml[i] < 0) { fill(seen.begin(), seen.end(), 0); if (aug(i)) { cout << "augmenting path left\n"; return 1; } }
    cout << "maximum matching " << m << "\n";
}
