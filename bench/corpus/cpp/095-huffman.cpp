#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(95);
    string text; for (int i = 0; i < 100000; i++) { int r = rng() % 100; text += r < 40 ? 'e' : r < 60 ? 't' : r < 75 ? 'a' : r < 85 ? 'o' : char('b' + rng() % 20); }
    map<char, long long> freq; for (char c : text) freq[c]++;
    struct N { long long w; int id; }; vector<array<int, 2>> kids; vector<char> sym;
    auto cmp = [](N a, N b) { return a.w > b.w || (a.w == b.w && a.id > b.id); };
    priority_queue<N, vector<N>, decltype(cmp)> pq(cmp);
    for (auto [c, f] : freq) { pq.push({f, (int)kids.size()}); kids.push_back({-1, -1}); sym.push_back(c); }
    while (pq.size() > 1) { N a = pq.top(); pq.pop(); N b = pq.top(); pq.pop(); pq.push({a.w + b.w, (int)kids.size()}); kids.push_back({a.id, b.id}); sym.push_back(0); }
    map<char, string> code;
    function<void(int, string)> walk = [&](int v, string s) { if (kids[v][0] < 0) { code[sym[v]] = s.empty() ? "0" : s; return; } walk(kids[v][0], s + "0"); walk(kids[v][1], s + "1"); };
    walk(pq.top().id, "");
    string bits; for (char c : text) bits += code[c];
    // decode back
    string out; int v = pq.top().id; for (char b : bits) { v = kids[v][b - '0']; if (kids[v][0] < 0) { out += sym[v]; v = pq.top().id; } }
    if (out != text) { cout << "mismatch\n"; return 1; }
    // Kraft equality for a full binary code
    double kraft = 0; for (auto& [c, s] : code) kraft += pow(2.0, -(double)s.size());
    if (fabs(kraft - 1) > 1e-12) { cout << "not full\n"; return 1; }
    cout << "encoded bits " << bits.size() << " vs " << text.size() * 8 << "\n";
}
