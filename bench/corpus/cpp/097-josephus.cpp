#include <iostream>
#include <list>
int main() {
    for (int n = 1; n <= 300; n++) for (int k = 1; k <= 12; k++) {
        int j = 0; for (int i = 2; i <= n; i++) j = (j + k) % i;
        std::list<int> c; for (int i = 0; i < n; i++) c.push_back(i);
        auto it = c.begin();
        while (c.size() > 1) { for (int s = 1; s < k; s++) { ++it; if (it == c.end()) it = c.begin(); } it = c.erase(it); if (it == c.end()) it = c.begin(); }
        if (c.front() != j) { std::cout << "mismatch n=" << n << " k=" << k << "\n"; return 1; }
    }
    int j = 0; for (int i = 2; i <= 1000000; i++) j = (j + 3) % i;
    std::cout << "survivor of 10^6 with k=3: " << j + 1 << "\n";
}
