#include <iostream>
#include <deque>
#include <vector>
#include <random>
#include <algorithm>
int main() {
    std::mt19937 rng(15);
    int n = 100000, k = 37;
    std::vector<int> a(n);
    for (auto& x : a) x = rng() % 1000000;
    std::deque<int> dq;
    std::vector<int> out;
    for (int i = 0; i < n; i++) {
        while (!dq.empty() && a[dq.back()] <= a[i]) dq.pop_back();
        dq.push_back(i);
        if (dq.front() <= i - k) dq.pop_front();
        if (i >= k - 1) out.push_back(a[dq.front()]);
    }
    for (int i = 0; i + k <= n; i += 97) {
        if (out[i] != *std::max_element(a.begin() + i, a.begin() + i + k)) { std::cout << "mismatch\n"; return 1; }
    }
    long long s = 0;
    for (int v : out) s += v;
    std::cout << "windows " << out.size() << " sum " << s << "\n";
}
