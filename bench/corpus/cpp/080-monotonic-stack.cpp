#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(80);
    for (int t = 0; t < 100; t++) {
        int n = 1 + rng() % 300;
        vector<long long> h(n); for (auto& x : h) x = rng() % 100;
        // largest rectangle in a histogram
        stack<int> st; long long best = 0;
        for (int i = 0; i <= n; i++) {
            long long cur = i == n ? 0 : h[i];
            while (!st.empty() && h[st.top()] >= cur) { long long hh = h[st.top()]; st.pop(); int left = st.empty() ? -1 : st.top(); best = max(best, hh * (i - left - 1)); }
            st.push(i);
        }
        long long brute = 0;
        for (int i = 0; i < n; i++) { long long m = LLONG_MAX; for (int j = i; j < n; j++) { m = min(m, h[j]); brute = max(brute, m * (j - i + 1)); } }
        if (brute != best) { cout << "mismatch\n"; return 1; }
    }
    cout << "histograms ok\n";
}
