#include <cstdio>
#include <cstdint>
uint64_t modpow(uint64_t b, uint64_t e, uint64_t m) {
    uint64_t r = 1 % m; b %= m;
    while (e) { if (e & 1) r = (__uint128_t)r * b % m; b = (__uint128_t)b * b % m; e >>= 1; }
    return r;
}
int main() {
    uint64_t seed = 20;
    for (int t = 0; t < 20000; t++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t b = seed >> 40, e = (seed >> 8) % 60, m = 1 + (seed % 1000003);
        uint64_t naive = 1 % m;
        for (uint64_t i = 0; i < e; i++) naive = naive * (b % m) % m;
        if (naive != modpow(b, e, m)) { std::puts("mismatch"); return 1; }
    }
    // Fermat: a^(p-1) = 1 mod p
    const uint64_t p = 998244353;
    for (uint64_t a = 2; a < 1000; a++) if (modpow(a, p - 1, p) != 1) { std::puts("fermat fails"); return 1; }
    std::printf("2^(10^18) mod p = %llu\n", (unsigned long long)modpow(2, 1000000000000000000ULL, p));
}
