#include <iostream>
#include <vector>
#include <algorithm>
#include <random>
int main() {
    std::mt19937 rng(8);
    std::vector<double> a(50000);
    for (auto& x : a) x = std::uniform_real_distribution<double>(-1, 1)(rng);
    auto b = a;
    std::vector<size_t> gaps;
    for (size_t g = 1; g < a.size(); g = g * 3 + 1) gaps.push_back(g);
    for (auto it = gaps.rbegin(); it != gaps.rend(); ++it) {
        size_t g = *it;
        for (size_t i = g; i < a.size(); i++) {
            double v = a[i]; size_t j = i;
            while (j >= g && a[j - g] > v) { a[j] = a[j - g]; j -= g; }
            a[j] = v;
        }
    }
    std::sort(b.begin(), b.end());
    if (a != b) { std::cout << "mismatch\n"; return 1; }
    std::cout.precision(6);
    std::cout << std::fixed << "min " << a.front() << " max " << a.back() << "\n";
}
