#include <cstdio>
int n, cnt;
void go(int row, unsigned cols, unsigned d1, unsigned d2) {
    if (row == n) { cnt++; return; }
    unsigned avail = ~(cols | d1 | d2) & ((1u << n) - 1);
    while (avail) { unsigned b = avail & -avail; avail -= b; go(row + 1, cols | b, (d1 | b) << 1, (d2 | b) >> 1); }
}
int main() {
    const int known[] = {1, 1, 0, 0, 2, 10, 4, 40, 92, 352, 724, 2680, 14200};
    for (n = 1; n <= 12; n++) { cnt = 0; go(0, 0, 0, 0); if (cnt != known[n]) { std::printf("mismatch n=%d\n", n); return 1; } }
    std::printf("12-queens solutions: %d\n", known[12]);
}
