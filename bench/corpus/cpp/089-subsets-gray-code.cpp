#include <cstdio>
#include <vector>
int main() {
    const int n = 20;
    std::vector<char> seen(1 << n, 0);
    unsigned prev = 0;
    for (unsigned i = 0; i < (1u << n); i++) {
        unsigned g = i ^ (i >> 1);
        if (seen[g]) { std::puts("repeat"); return 1; }
        seen[g] = 1;
        if (i && __builtin_popcount(g ^ prev) != 1) { std::puts("mismatch"); return 1; }
        // inverse Gray code
        unsigned b = 0; for (unsigned x = g; x; x >>= 1) b ^= x;
        if (b != i) { std::puts("inverse mismatch"); return 1; }
        prev = g;
    }
    std::printf("gray code over %d bits ok, last %u\n", n, prev);
}
