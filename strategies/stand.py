"""STAND: model-free stochastic n-gram drafting, lossless (docs/strategies.md).

An n-gram table built from the model's own trajectory stores the target's next-token
PROBABILITIES (top-`store_k`, renormalised), not counts. After every verification, for every
verified position (the root context and each accepted node; with `seed_from_prompt` also
every prompt position at the prefill), the target's distribution there is stored under each
of the preceding n-grams, n = min_ngram..max_ngram. An n-gram seen again is merged by
recency: entry <- top-k of norm((1 - new_weight) * old + new_weight * new) (new_weight 1 =
overwrite with the latest). Probabilities are softmax(logits / T) (T = 1 when greedy), cut
to the sampler's top_k when it has one.

Drafting: a token tree grown level by level. A node's q is the entry of the LONGEST n-gram
(max_ngram down to min_ngram) ending at it (committed tokens + its path); its children are
drawn from q WITHOUT replacement by Gumbel-Top-k (q's top-k order when greedy), so q is a real
distribution and the tree is an RSD tree. Verification: ONE target forward over the tree and
recursive rejection sampling over siblings (probs.verify_tree with q_by_parent; greedy =
longest matching path). Lossless at every temperature.

Tree shape from acceptance statistics (`branching: null`, the default; a list fixes it).
Per depth d and sibling rank r the strategy counts how often a node on the accepted path
had its rank-r child offered and accepted, and how often a lookup at depth d found an entry.
With pi[d][r] = (accepted + prior) / (offered + 2) (prior 2 * 0.5^(r+1)) and hit rate h[d]
(prior 0.5), a branching vector b (b_d children per node at depth d) accepts in expectation
E(b) = sum_d prod_{j <= d} h[j] * min(1, sum_{r < b_j} pi[j][r]) tokens and costs
N(b) = sum_d prod_{j <= d} b_j nodes. Before each step, b is grown greedily from [1]: of the
moves "add a level" and "b_d += 1" (b_d <= max_branch, depth <= max_depth, N(b) <= node_budget)
take the one with the largest gain in E per added node, until no move gains.

Persistence: with `share_across_samples` (default true; recorded in params) the table and
the statistics survive into the next generate() call IF it is for the same prompt (the
runner's samples of one example, best-of-N: STAND's setting) and are reset whenever the prompt
changes, so nothing leaks across examples. Consequence: sample s of an example sees the
trajectories of samples 0..s-1 run before it in the same process; a run resumed between two
samples of one example starts that example's table afresh (still lossless, but at T > 0 the
resumed samples are not the same draws as an uninterrupted run's).
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import Strategy
from strategies.core.trees import tree_forward


class NgramTable:
    """n-gram (tuple) -> (tokens, probs): a top-k next-token distribution, sorted, summing to 1."""

    def __init__(self, min_ngram: int, max_ngram: int, store_k: int, new_weight: float):
        self.min_n, self.max_n, self.k, self.w = min_ngram, max_ngram, store_k, new_weight
        self.entries: dict[tuple, tuple[list[int], list[float]]] = {}

    def __len__(self):
        return len(self.entries)

    def lookup(self, ctx) -> tuple[list[int], list[float]] | None:
        """The entry of the longest stored n-gram ending ctx."""
        for n in range(min(self.max_n, len(ctx)), self.min_n - 1, -1):
            e = self.entries.get(tuple(ctx[-n:]))
            if e is not None:
                return e
        return None

    def store(self, ctx, toks: list[int], probs: list[float]) -> None:
        """Store the distribution observed after ctx under each of its last n-grams."""
        for n in range(self.min_n, min(self.max_n, len(ctx)) + 1):
            key = tuple(ctx[-n:])
            old = self.entries.get(key)
            if old is None or self.w >= 1.0:
                self.entries[key] = (toks, probs)
                continue
            mix = dict(zip(old[0], (p * (1.0 - self.w) for p in old[1])))
            for t, p in zip(toks, probs):
                mix[t] = mix.get(t, 0.0) + self.w * p
            top = sorted(mix.items(), key=lambda kv: -kv[1])[: self.k]
            z = sum(p for _, p in top)
            self.entries[key] = ([t for t, _ in top], [p / z for _, p in top])


class ShapeStats:
    """Per-depth acceptance statistics and the branching rule (module docstring)."""

    def __init__(self, max_depth: int, max_branch: int):
        self.D, self.B = max_depth, max_branch
        self.offered = [[0] * max_branch for _ in range(max_depth)]
        self.accepted = [[0] * max_branch for _ in range(max_depth)]
        self.looked = [0] * max_depth
        self.hits = [0] * max_depth

    def pi(self, d: int, r: int) -> float:
        return (self.accepted[d][r] + 2 * 0.5 ** (r + 1)) / (self.offered[d][r] + 2)

    def hit(self, d: int) -> float:
        return (self.hits[d] + 1.0) / (self.looked[d] + 2)

    def expected(self, b: list[int]) -> float:
        e, reach = 0.0, 1.0
        for d, bd in enumerate(b):
            reach *= self.hit(d) * min(1.0, sum(self.pi(d, r) for r in range(bd)))
            e += reach
        return e

    @staticmethod
    def nodes(b: list[int]) -> int:
        n, width = 0, 1
        for bd in b:
            width *= bd
            n += width
        return n

    def choose(self, budget: int) -> list[int]:
        b = [1]
        e, n = self.expected(b), 1
        while True:
            best = None
            moves = [b + [1]] if len(b) < self.D else []
            moves += [b[:d] + [b[d] + 1] + b[d + 1:] for d in range(len(b)) if b[d] < self.B]
            for nb in moves:
                nn = self.nodes(nb)
                if nn > budget:
                    continue
                gain = (self.expected(nb) - e) / (nn - n)
                if gain > 1e-12 and (best is None or gain > best[0]):
                    best = (gain, nb, nn)
            if best is None:
                return b
            _, b, n = best
            e = self.expected(b)


class STAND(Strategy):
    name = "stand"
    needs = frozenset({"rollback", "tree_mask"})

    def __init__(self, node_budget: int = 16, max_depth: int = 8, max_branch: int = 4, branching=None,
                 min_ngram: int = 1, max_ngram: int = 3, store_k: int = 8, new_weight: float = 0.5,
                 seed_from_prompt: bool = True, share_across_samples: bool = True, sampling=None):
        super().__init__(sampling)
        if node_budget < 1 or max_depth < 1 or max_branch < 1 or store_k < 1:
            raise ConfigError("stand: node_budget, max_depth, max_branch and store_k must be >= 1")
        if not 1 <= min_ngram <= max_ngram:
            raise ConfigError(f"stand: need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        if not 0 < new_weight <= 1:
            raise ConfigError(f"stand: new_weight must be in (0, 1], got {new_weight}")
        if branching is not None:
            branching = [int(x) for x in branching]
            if not branching or min(branching) < 1:
                raise ConfigError(f"stand: branching must be null (from acceptance statistics) or a non-empty "
                                  f"list of ints >= 1, got {branching}")
        self.node_budget, self.max_depth, self.max_branch, self.branching = node_budget, max_depth, max_branch, branching
        self.min_ngram, self.max_ngram, self.store_k, self.new_weight = min_ngram, max_ngram, store_k, float(new_weight)
        self.seed_from_prompt, self.share_across_samples = bool(seed_from_prompt), bool(share_across_samples)
        self._prompt_key = None
        self.table: NgramTable | None = None
        self.stats: ShapeStats | None = None

    def params(self) -> dict:
        return {**super().params(), "branching": self.branching or "auto"}

    # ------------------------------------------------------------------ state
    def _start(self, prompt_ids) -> None:
        key = (len(prompt_ids), hash(tuple(prompt_ids)))
        if not (self.share_across_samples and key == self._prompt_key and self.table is not None):
            k = self.store_k if not self.sampling.top_k else min(self.store_k, self.sampling.top_k)
            self.table = NgramTable(self.min_ngram, self.max_ngram, k, self.new_weight)
            self.stats = ShapeStats(self.max_depth, self.max_branch)
        self._prompt_key = key

    def _observe(self, contexts: list[list[int]], logits: torch.Tensor) -> None:
        """Store the target's top-k next-token probabilities after each context (rows of logits)."""
        if not contexts:
            return
        temp = self.sampling.temperature or 1.0
        x = logits / temp
        k = min(self.table.k, x.shape[-1])
        vals, idx = torch.topk(x, k, dim=-1)
        probs = torch.softmax(vals, dim=-1)  # = softmax(x) restricted to its top-k, renormalised
        for ctx, toks, ps in zip(contexts, idx.tolist(), probs.tolist()):
            self.table.store(ctx, toks, ps)

    # ------------------------------------------------------------------ drafting
    def _draft(self, seq: list[int], shape: list[int], rng: torch.Generator):
        tab, greedy, cap = self.table, self.sampling.greedy, self.node_budget
        tokens, parents, depths, ranks = [], [], [], []
        q_small, hit, nkids = {}, {}, {}
        frontier = [(-1, tuple(seq[-self.max_ngram:]))]
        for d, b in enumerate(shape):
            nxt = []
            for node, ctx in frontier:
                if len(tokens) >= cap:
                    break
                e = tab.lookup(ctx)
                hit[node] = e is not None
                if e is None:
                    continue
                toks, ps = e
                k = min(b, len(toks), cap - len(tokens))
                order = list(range(k)) if greedy else P.gumbel_top_k(torch.tensor(ps, device=rng.device), k, rng)
                q_small[node], nkids[node] = e, len(order)
                for r, j in enumerate(order):
                    tokens.append(toks[j])
                    parents.append(node)
                    depths.append(d)
                    ranks.append(r)
                    nxt.append((len(tokens) - 1, (ctx + (toks[j],))[-self.max_ngram:]))
            frontier = nxt
        return tokens, parents, depths, ranks, q_small, hit, nkids

    def _learn(self, path: list[int], ranks: list[int], hit: dict, nkids: dict) -> None:
        st = self.stats
        for d, node in enumerate([-1] + path):
            if d >= st.D or node not in hit:
                break
            st.looked[d] += 1
            st.hits[d] += hit[node]
            for r in range(min(nkids.get(node, 0), st.B)):
                st.offered[d][r] += 1
            if d < len(path) and ranks[path[d]] < st.B:
                st.accepted[d][ranks[path[d]]] += 1

    # ------------------------------------------------------------------ the loop
    def decode(self, state):
        target, s, rng, trace = state.target, self.sampling, state.rng, state.trace
        self._start(state.prompt.ids)
        V = target.vocab_size
        while not state.done:
            remaining, seq = state.remaining, state.seq
            shape = (self.branching or self.stats.choose(self.node_budget))[: max(remaining - 1, 0)]
            tokens, parents, depths, ranks, q_small, hit, nkids = self._draft(seq, shape, rng)
            m = len(tokens)
            tail = seq[target.length:]
            t = len(tail)
            logits = tree_forward(target, tail, tokens, parents, plain_if_empty=True)
            rows = logits[t - 1:]
            if s.greedy:
                path, nxt = P.verify_tree(rows, tokens, parents, None, rng, True)
            else:
                qmap = {}
                for node, (toks, ps) in q_small.items():
                    q = torch.zeros(V)
                    q[torch.tensor(toks)] = torch.tensor(ps)
                    qmap[node] = q
                path, nxt = P.verify_tree(_LazyProbs(rows, s), tokens, parents, qmap, rng, False)
            if m:
                state.verified_tree(parents[:m], len(path))
                target.keep(path, m)
            self._learn(path, ranks, hit, nkids)
            # verified positions: (prompt at the prefill), the root, each accepted node
            first = 0 if (self.seed_from_prompt and not trace.tokens) else t - 1
            base = len(seq) - t  # absolute index of tail[0]
            ctxs = [seq[max(0, base + i + 1 - self.max_ngram): base + i + 1] for i in range(first, t)]
            acc = [tokens[i] for i in path]
            full = seq + acc
            ctxs += [full[max(0, len(seq) + j + 1 - self.max_ngram): len(seq) + j + 1] for j in range(len(path))]
            self._observe(ctxs, torch.cat([logits[first:t], logits[[t + i for i in path]]]))
            state.count("lookups", len(hit))
            state.count("lookup_hits", sum(hit.values()))
            state.emit(acc + [nxt])


class _LazyProbs:
    """rows[i] -> processed target probabilities, computed only for the rows verify_tree visits."""

    def __init__(self, logits: torch.Tensor, sampling):
        self.logits, self.sampling, self.cache = logits, sampling, {}

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            self.cache[i] = self.sampling.probs(self.logits[i])
        return self.cache[i]
