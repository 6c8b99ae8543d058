#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(67);
    vector<string> pats;
    for (int i = 0; i < 200; i++) { string p(1 + rng() % 6, 'a'); for (auto& c : p) c = 'a' + rng() % 3; pats.push_back(p); }
    vector<array<int, 3>> go(1); go[0].fill(-1);
    vector<int> link(1, 0); vector<long long> out(1, 0);
    for (auto& p : pats) { int v = 0; for (char ch : p) { int c = ch - 'a'; if (go[v][c] < 0) { go[v][c] = go.size(); go.push_back({-1, -1, -1}); link.push_back(0); out.push_back(0); } v = go[v][c]; } out[v]++; }
    queue<int> q;
    for (int c = 0; c < 3; c++) { if (go[0][c] < 0) go[0][c] = 0; else q.push(go[0][c]); }
    while (!q.empty()) { int v = q.front(); q.pop(); out[v] += out[link[v]]; for (int c = 0; c < 3; c++) { int u = go[v][c]; if (u < 0) go[v][c] = go[link[v]][c]; else { link[u] = v ? go[link[v]][c] : 0; q.push(u); } } }
    string t(20000, 'a'); for (auto& c : t) c = 'a' + rng() % 3;
    long long total = 0; int v = 0;
    for (char ch : t) { v = go[v][ch - 'a']; total += out[v]; }
    long long brute = 0;
    for (auto& p : pats) for (size_t pos = t.find(p); pos != string::npos; pos = t.find(p, pos + 1)) brute++;
    if (brute != total) { cout << "mismatch " << brute << " " << total << "\n"; return 1; }
    cout << "matches " << total << "\n";
}
