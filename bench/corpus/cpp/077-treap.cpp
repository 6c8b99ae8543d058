#include <bits/stdc++.h>
using namespace std;
mt19937 rng(77);
struct Node { int key, pri, sz; Node *l, *r; Node(int k) : key(k), pri(rng()), sz(1), l(nullptr), r(nullptr) {} };
int sz(Node* t) { return t ? t->sz : 0; }
void upd(Node* t) { if (t) t->sz = 1 + sz(t->l) + sz(t->r); }
void split(Node* t, int k, Node*& a, Node*& b) { if (!t) { a = b = nullptr; return; } if (t->key < k) { split(t->r, k, t->r, b); a = t; } else { split(t->l, k, a, t->l); b = t; } upd(t); }
Node* merge(Node* a, Node* b) { if (!a || !b) return a ? a : b; if (a->pri > b->pri) { a->r = merge(a->r, b); upd(a); return a; } b->l = merge(a, b->l); upd(b); return b; }
int kth(Node* t, int k) { while (true) { int ls = sz(t->l); if (k < ls) t = t->l; else if (k == ls) return t->key; else { k -= ls + 1; t = t->r; } } }
int main() {
    Node* root = nullptr; multiset<int> ref; vector<int> sorted;
    for (int q = 0; q < 50000; q++) {
        int x = rng() % 100000;
        Node *a, *b; split(root, x, a, b); root = merge(merge(a, new Node(x)), b); ref.insert(x);
        if (q % 500 == 0) {
            sorted.assign(ref.begin(), ref.end());
            for (int t = 0; t < 20; t++) { int k = rng() % sorted.size(); if (kth(root, k) != sorted[k]) { cout << "mismatch\n"; return 1; } }
            Node *lo, *hi; split(root, x, lo, hi); if (sz(lo) != (int)distance(ref.begin(), ref.lower_bound(x))) { cout << "rank mismatch\n"; return 1; } root = merge(lo, hi);
        }
    }
    cout << "size " << sz(root) << " median " << kth(root, sz(root) / 2) << "\n";
}
