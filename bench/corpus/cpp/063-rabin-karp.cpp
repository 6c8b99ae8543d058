#include <bits/stdc++.h>
using namespace std;
typedef unsigned long long u64;
int main() {
    mt19937 rng(63);
    string t(200000, 'a'); for (auto& c : t) c = 'a' + rng() % 3;
    const u64 B = 131, M = (1ULL << 61) - 1;
    auto mul = [&](u64 a, u64 b) { __uint128_t x = (__uint128_t)a * b; u64 r = (u64)(x & M) + (u64)(x >> 61); return r >= M ? r - M : r; };
    int n = t.size();
    vector<u64> h(n + 1, 0), pw(n + 1, 1);
    for (int i = 0; i < n; i++) { h[i + 1] = (mul(h[i], B) + t[i]) % M; pw[i + 1] = mul(pw[i], B); }
    auto sub = [&](int l, int len) { return (h[l + len] + M - mul(h[l], pw[len])) % M; };
    long long found = 0;
    for (int q = 0; q < 40; q++) {
        int len = 1 + rng() % 10; int at = rng() % (n - len);
        string p = t.substr(at, len);
        u64 hp = 0; for (char c : p) hp = (mul(hp, B) + c) % M;
        vector<int> r, b;
        for (int i = 0; i + len <= n; i++) if (sub(i, len) == hp) r.push_back(i);
        for (size_t pos = t.find(p); pos != string::npos; pos = t.find(p, pos + 1)) b.push_back(pos);
        if (r != b) { cout << "mismatch\n"; return 1; }
        found += r.size();
    }
    cout << "matches " << found << "\n";
}
