#include <cstdio>
#include <numeric>
#include <cstdint>
long long g(long long a, long long b) { while (b) { long long t = a % b; a = b; b = t; } return a; }
int main() {
    uint64_t s = 53;
    long long acc = 0;
    for (int t = 0; t < 300000; t++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        long long a = s % 1000000 + 1, b = (s >> 20) % 1000000 + 1;
        long long x = g(a, b);
        if (x != std::gcd(a, b) || a % x || b % x || std::gcd(a / x, b / x) != 1) { std::puts("mismatch"); return 1; }
        if (a / x * b != std::lcm(a, b)) { std::puts("lcm mismatch"); return 1; }
        acc += x;
    }
    std::printf("sum of gcds %lld\n", acc);
}
