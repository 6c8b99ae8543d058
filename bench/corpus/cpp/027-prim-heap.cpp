#include <iostream>
#include <vector>
#include <queue>
#include <random>
#include <functional>
#include <numeric>
#include <algorithm>
int main() {
    std::mt19937 rng(27);
    int n = 5000;
    std::vector<std::vector<std::pair<int, int>>> adj(n);
    std::vector<std::tuple<int, int, int>> edges;
    auto add = [&](int a, int b, int w) { adj[a].push_back({b, w}); adj[b].push_back({a, w}); edges.emplace_back(w, a, b); };
    for (int i = 1; i < n; i++) add(i, rng() % i, rng() % 1000);
    for (int i = 0; i < 30000; i++) add(rng() % n, rng() % n, rng() % 1000);
    std::vector<bool> in(n, false);
    std::priority_queue<std::pair<int, int>, std::vector<std::pair<int, int>>, std::greater<>> pq;
    pq.push({0, 0});
    long long total = 0;
    while (!pq.empty()) {
        auto [w, v] = pq.top(); pq.pop();
        if (in[v]) continue;
        in[v] = true; total += w;
        for (auto [u, c] : adj[v]) if (!in[u]) pq.push({c, u});
    }
    std::sort(edges.begin(), edges.end());
    std::vector<int> p(n); std::iota(p.begin(), p.end(), 0);
    std::function<int(int)> f = [&](int x) { return p[x] == x ? x : p[x] = f(p[x]); };
    long long kr = 0;
    for (auto [w, a, b] : edges) if (f(a) != f(b)) { p[f(a)] = f(b); kr += w; }
    if (kr != total) { std::cout << "mismatch\n"; return 1; }
    std::cout << "mst " << total << "\n";
}
