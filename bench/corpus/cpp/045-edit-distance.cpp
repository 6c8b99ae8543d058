#include <bits/stdc++.h>
using namespace std;
int ed(const string& a, const string& b) {
    vector<int> prev(b.size() + 1), cur(b.size() + 1);
    iota(prev.begin(), prev.end(), 0);
    for (size_t i = 1; i <= a.size(); i++) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); j++) cur[j] = min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
        swap(prev, cur);
    }
    return prev[b.size()];
}
int main() {
    if (ed("kitten", "sitting") != 3 || ed("", "abc") != 3 || ed("flaw", "lawn") != 2) { cout << "mismatch\n"; return 1; }
    mt19937 rng(45);
    for (int t = 0; t < 300; t++) {
        string a(rng() % 30, 'a'), b(rng() % 30, 'a');
        for (auto& c : a) c = 'a' + rng() % 3;
        for (auto& c : b) c = 'a' + rng() % 3;
        int d = ed(a, b);
        // metric properties
        if (d != ed(b, a) || d < (int)max(a.size(), b.size()) - (int)min(a.size(), b.size()) || d > (int)max(a.size(), b.size())) { cout << "mismatch\n"; return 1; }
    }
    string x(1500, 'a'), y(1500, 'a');
    for (auto& c : x) c = 'a' + rng() % 26;
    for (auto& c : y) c = 'a' + rng() % 26;
    cout << "distance " << ed(x, y) << "\n";
}
