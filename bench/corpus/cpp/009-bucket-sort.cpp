#include <bits/stdc++.h>
using namespace std;
int main() {
    mt19937 rng(9);
    uniform_real_distribution<double> d(0.0, 1.0);
    int n = 100000;
    vector<double> a(n);
    for (auto& x : a) x = d(rng);
    vector<vector<double>> buckets(n);
    for (double x : a) buckets[min(n - 1, (int)(x * n))].push_back(x);
    vector<double> out;
    for (auto& b : buckets) { sort(b.begin(), b.end()); out.insert(out.end(), b.begin(), b.end()); }
    vector<double> ref = a;
    sort(ref.begin(), ref.end());
    if (out != ref) { cout << "mismatch\n"; return 1; }
    size_t empty = count_if(buckets.begin(), buckets.end(), [](auto& b) { return b.empty(); });
    cout << "empty buckets " << empty << "\n";
}
