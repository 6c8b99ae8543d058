#include <bits/stdc++.h>
using namespace std;
vector<int> kmp(const string& t, const string& p) {
    vector<int> f(p.size(), 0), res;
    for (size_t i = 1, k = 0; i < p.size(); i++) { while (k && p[i] != p[k]) k = f[k - 1]; if (p[i] == p[k]) k++; f[i] = k; }
    for (size_t i = 0, k = 0; i < t.size(); i++) { while (k && t[i] != p[k]) k = f[k - 1]; if (t[i] == p[k]) k++; if (k == p.size()) { res.push_back(i + 1 - k); k = f[k - 1]; } }
    return res;
}
int main() {
    mt19937 rng(61);
    string t(300000, 'a'); for (auto& c : t) c = 'a' + rng() % 2;
    long long total = 0;
    for (int q = 0; q < 30; q++) {
        string p(1 + rng() % 12, 'a'); for (auto& c : p) c = 'a' + rng() % 2;
        auto r = kmp(t, p);
        vector<int> b; for (size_t pos = t.find(p); pos != string::npos; pos = t.find(p, pos + 1)) b.push_back(pos);
        if (r != b) { cout << "mismatch\n"; return 1; }
        total += r.size();
    }
    cout << "occurrences " << total << "\n";
}
