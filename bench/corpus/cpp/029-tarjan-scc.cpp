#include <bits/stdc++.h>
using namespace std;
int n; vector<vector<int>> adj;
vector<int> idx, low, comp; vector<bool> on; stack<int> st; int counter = 0, ncomp = 0;
void dfs(int v) {
    idx[v] = low[v] = counter++; st.push(v); on[v] = true;
    for (int w : adj[v]) {
        if (idx[w] < 0) { dfs(w); low[v] = min(low[v], low[w]); }
        else if (on[w]) low[v] = min(low[v], idx[w]);
    }
    if (low[v] == idx[v]) { while (true) { int w = st.top(); st.pop(); on[w] = false; comp[w] = ncomp; if (w == v) break; } ncomp++; }
}
int main() {
    mt19937 rng(29);
    n = 300; adj.assign(n, {});
    for (int i = 0; i < 500; i++) adj[rng() % n].push_back(rng() % n);
    idx.assign(n, -1); low.assign(n, 0); comp.assign(n, -1); on.assign(n, false);
    for (int v = 0; v < n; v++) if (idx[v] < 0) dfs(v);
    // reference: reachability matrix by BFS from every vertex
    vector<vector<bool>> R(n, vector<bool>(n, false));
    for (int s = 0; s < n; s++) { queue<int> q; q.push(s); R[s][s] = true; while (!q.empty()) { int v = q.front(); q.pop(); for (int w : adj[v]) if (!R[s][w]) { R[s][w] = true; q.push(w); } } }
    for (int a = 0; a < n; a++) for (int b = 0; b < n; b++) if ((R[a][b] && R[b][a]) != (comp[a] == comp[b])) { cout << "mismatch\n"; return 1; }
    cout << "strongly connected components " << ncomp << "\n";
}
