#include <bits/stdc++.h>
using namespace std;
struct Trie {
    vector<array<int, 26>> nx; vector<int> cnt, end;
    Trie() { nx.push_back({}); nx[0].fill(0); cnt.push_back(0); end.push_back(0); }
    void insert(const string& w) { int v = 0; for (char ch : w) { int c = ch - 'a'; if (!nx[v][c]) { nx[v][c] = nx.size(); nx.push_back({}); nx.back().fill(0); cnt.push_back(0); end.push_back(0); } v = nx[v][c]; cnt[v]++; } end[v]++; }
    int prefix(const string& p) { int v = 0; for (char ch : p) { v = nx[v][ch - 'a']; if (!v) return 0; } return cnt[v]; }
    bool has(const string& w) { int v = 0; for (char ch : w) { v = nx[v][ch - 'a']; if (!v) return false; } return end[v] > 0; }
};
int main() {
    mt19937 rng(66);
    Trie t; vector<string> words; set<string> ws;
    for (int i = 0; i < 20000; i++) { string w(1 + rng() % 8, 'a'); for (auto& c : w) c = 'a' + rng() % 5; t.insert(w); words.push_back(w); ws.insert(w); }
    for (int q = 0; q < 2000; q++) {
        string p(1 + rng() % 4, 'a'); for (auto& c : p) c = 'a' + rng() % 5;
        int b = 0; for (auto& w : words) b += w.compare(0, p.size(), p) == 0;
        if (b != t.prefix(p) || (ws.count(p) > 0) != t.has(p)) { cout << "mismatch\n"; return 1; }
    }
    cout << "trie nodes " << t.nx.size() << "\n";
}
