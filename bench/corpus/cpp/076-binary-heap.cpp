#include <bits/stdc++.h>
using namespace std;
struct Heap { vector<int> h;
    void push(int x) { h.push_back(x); size_t i = h.size() - 1; while (i && h[(i - 1) / 2] > h[i]) { swap(h[i], h[(i - 1) / 2]); i = (i - 1) / 2; } }
    int pop() { int r = h[0]; h[0] = h.back(); h.pop_back(); size_t i = 0; while (true) { size_t l = 2 * i + 1, m = i; if (l < h.size() && h[l] < h[m]) m = l; if (l + 1 < h.size() && h[l + 1] < h[m]) m = l + 1; if (m == i) break; swap(h[i], h[m]); i = m; } return r; } };
int main() {
    mt19937 rng(76);
    Heap h; priority_queue<int, vector<int>, greater<int>> ref; long long acc = 0;
    for (int q = 0; q < 300000; q++) {
        if (ref.empty() || rng() % 3) { int x = rng() % 1000000; h.push(x); ref.push(x); }
        else { int a = h.pop(), b = ref.top(); ref.pop(); if (a != b) { cout << "mismatch\n"; return 1; } acc += a; }
    }
    cout << "popped sum " << acc << " left " << h.h.size() << "\n";
}
