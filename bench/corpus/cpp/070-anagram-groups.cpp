#include <iostream>
#include <string>
#include <vector>
#include <map>
#include <unordered_map>
#include <algorithm>
#include <random>
int main() {
    std::mt19937 rng(70);
    std::vector<std::string> words;
    for (int i = 0; i < 50000; i++) { std::string w(3 + rng() % 3, 'a'); for (auto& c : w) c = 'a' + rng() % 6; words.push_back(w); }
    std::unordered_map<std::string, int> bySorted;
    for (auto& w : words) { std::string k = w; std::sort(k.begin(), k.end()); bySorted[k]++; }
    std::map<std::vector<int>, int> byCount;
    for (auto& w : words) { std::vector<int> c(26, 0); for (char ch : w) c[ch - 'a']++; byCount[c]++; }
    if (bySorted.size() != byCount.size()) { std::cout << "mismatch\n"; return 1; }
    int biggest = 0; for (auto& [k, v] : bySorted) biggest = std::max(biggest, v);
    int biggest2 = 0; for (auto& [k, v] : byCount) biggest2 = std::max(biggest2, v);
    if (biggest != biggest2) { std::cout << "mismatch\n"; return 1; }
    std::cout << "groups " << bySorted.size() << " largest " << biggest << "\n";
}
