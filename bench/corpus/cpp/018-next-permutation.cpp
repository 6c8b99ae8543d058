#include <bits/stdc++.h>
using namespace std;
bool nextPerm(vector<int>& a) {
    int i = a.size() - 2;
    while (i >= 0 && a[i] >= a[i + 1]) i--;
    if (i < 0) { reverse(a.begin(), a.end()); return false; }
    int j = a.size() - 1;
    while (a[j] <= a[i]) j--;
    swap(a[i], a[j]);
    reverse(a.begin() + i + 1, a.end());
    return true;
}
int main() {
    vector<int> a = {1, 1, 2, 3, 3, 4, 5, 6}, b = a;
    long long count = 1;
    while (true) {
        bool x = nextPerm(a), y = next_permutation(b.begin(), b.end());
        if (x != y || a != b) { cout << "mismatch\n"; return 1; }
        if (!x) break;
        count++;
    }
    if (count != 40320 / 4) { cout << "wrong count " << count << "\n"; return 1; }
    cout << "permutations " << count << "\n";
}
