#include <bits/stdc++.h>
using namespace std;
int booth(const string& s) {
    string t = s + s; int n = s.size(), i = 0, j = 1, k = 0;
    while (i < n && j < n && k < n) {
        char a = t[i + k], b = t[j + k];
        if (a == b) { k++; continue; }
        if (a > b) i += k + 1; else j += k + 1;
        if (i == j) j++;
        k = 0;
    }
    return min(i, j);
}
int main() {
    mt19937 rng(69);
    for (int t = 0; t < 500; t++) {
        string s(1 + rng() % 60, 'a'); for (auto& c : s) c = 'a' + rng() % 3;
        int k = booth(s);
        string best = s; for (size_t r = 0; r < s.size(); r++) best = min(best, s.substr(r) + s.substr(0, r));
        if (s.substr(k) + s.substr(0, k) != best) { cout << "mismatch\n"; return 1; }
    }
    string s = "bbaaccaadd"; int k = booth(s);
    cout << "minimal rotation of " << s << ": " << s.substr(k) + s.substr(0, k) << "\n";
}
