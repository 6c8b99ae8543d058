#include <iostream>
#include <list>
#include <unordered_map>
#include <vector>
#include <random>
#include <algorithm>
class LRU {
    size_t cap; std::list<std::pair<int, int>> items; std::unordered_map<int, std::list<std::pair<int, int>>::iterator> pos;
public:
    explicit LRU(size_t c) : cap(c) {}
    int get(int k) { auto it = pos.find(k); if (it == pos.end()) return -1; items.splice(items.begin(), items, it->second); return it->second->second; }
    void put(int k, int v) { auto it = pos.find(k); if (it != pos.end()) { it->second->second = v; items.splice(items.begin(), items, it->second); return; } if (items.size() == cap) { pos.erase(items.back().first); items.pop_back(); } items.push_front({k, v}); pos[k] = items.begin(); }
};
int main() {
    std::mt19937 rng(78);
    LRU c(64); std::vector<std::pair<int, int>> ref;  // front = most recent
    int hits = 0;
    for (int q = 0; q < 100000; q++) {
        int k = rng() % 100;
        auto it = std::find_if(ref.begin(), ref.end(), [&](auto& p) { return p.first == k; });
        if (rng() % 2) {
            int got = c.get(k), want = it == ref.end() ? -1 : it->second;
            if (got != want) { std::cout << "mismatch\n"; return 1; }
            if (it != ref.end()) { auto p = *it; ref.erase(it); ref.insert(ref.begin(), p); hits++; }
        } else {
            int v = rng() % 1000; c.put(k, v);
            if (it != ref.end()) ref.erase(it); else if (ref.size() == 64) ref.pop_back();
            ref.insert(ref.begin(), {k, v});
        }
    }
    std::cout << "hits " << hits << "\n";
}
