#include <bits/stdc++.h>
using namespace std;
// Subtraction game: remove 1, 3 or 4 stones; several piles. Sprague-Grundy vs direct game-tree search.
int main() {
    vector<int> moves = {1, 3, 4}; int M = 40;
    vector<int> g(M + 1, 0);
    for (int n = 1; n <= M; n++) { set<int> s; for (int m : moves) if (m <= n) s.insert(g[n - m]); while (s.count(g[n])) g[n]++; }
    map<vector<int>, bool> memo;
    function<bool(vector<int>)> win = [&](vector<int> p) {
        sort(p.begin(), p.end()); auto it = memo.find(p); if (it != memo.end()) return it->second;
        bool w = false;
        for (size_t i = 0; i < p.size() && !w; i++) for (int m : moves) if (m <= p[i]) { auto q = p; q[i] -= m; if (!win(q)) { w = true; break; } }
        return memo[p] = w;
    };
    mt19937 rng(98); int firstWins = 0;
    for (int t = 0; t < 300; t++) {
        vector<int> p(1 + rng() % 3); for (auto& x : p) x = rng() % 15;
        int x = 0; for (int v : p) x ^= g[v];
        if ((x != 0) != win(p)) { cout << "mismatch\n"; return 1; }
        firstWins += x != 0;
    }
    cout << "first player wins " << firstWins << " of 300, grundy period:";
    for (int i = 0; i < 14; i++) cout << " " << g[i];
    cout << "\n";
}
