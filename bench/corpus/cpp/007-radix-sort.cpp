#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(7);
    int n = 300000;
    vector<uint32_t> a(n), tmp(n);
    for (auto& x : a) x = rng();
    vector<uint32_t> b = a;
    for (int shift = 0; shift < 32; shift += 8) {
        array<int, 257> c{};
        for (auto x : a) c[((x >> shift) & 255) + 1]++;
        for (int i = 0; i < 256; i++) c[i + 1] += c[i];
        for (auto x : a) tmp[c[(x >> shift) & 255]++] = x;
        a.swap(tmp);
    }
    sort(b.begin(), b.end());
    if (a != b) { cout << "mismatch\n"; return 1; }
    uint64_t h = 0;
    for (auto x : a) h = h * 1000003 + x;
    cout << "hash " << h << "\n";
}
