#include <iostream>
#include <vector>
#include <algorithm>
#include <random>
int main() {
    std::mt19937 rng(1);
    std::vector<int> a(2000);
    for (auto& x : a) x = rng() % 100000;
    std::vector<int> b = a;
    for (size_t i = 0; i < a.size(); ++i) {
        bool swapped = false;
        for (size_t j = 0; j + 1 < a.size() - i; ++j)
            if (a[j] > a[j + 1]) { std::swap(a[j], a[j + 1]); swapped = true; }
        if (!swapped) break;
    }
    std::sort(b.begin(), b.end());
    if (a != b) { std::cout << "mismatch\n"; return 1; }
    std::cout << "sorted " << a.size() << " first " << a.front() << " last " << a.back() << "\n";
}
