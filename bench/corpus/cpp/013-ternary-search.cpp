#include <cstdio>
#include <cmath>
int main() {
    // Minimum of f(x) = (x - 3.7)^2 + sin(x) near 3.7; compare against a dense scan.
    auto f = [](double x) { return (x - 3.7) * (x - 3.7) + std::sin(x); };
    double lo = 0, hi = 8;
    for (int it = 0; it < 200; it++) {
        double m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
        if (f(m1) < f(m2)) hi = m2; else lo = m1;
    }
    double x = (lo + hi) / 2;
    double best = 0, bv = 1e18;
    for (int i = 0; i <= 800000; i++) { double y = i * 1e-5; if (f(y) < bv) { bv = f(y); best = y; } }
    if (std::fabs(best - x) > 1e-4) { std::printf("mismatch %f %f\n", x, best); return 1; }
    std::printf("argmin %.4f value %.6f\n", x, f(x));
}
