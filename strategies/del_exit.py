"""DEL: dynamic exit layer self-speculative decoding (docs/strategies.md).

The draft is the TARGET itself cut after its first l decoder layers (+ the final norm + the LM
head): no second model. Each step chooses the exit layer l and the draft length d online,
maximising tokens per loaded layer

    TPL(l, d) = [(1 - a_l^(d+1)) / (1 - a_l)] / (d * l + L)      (L = number of layers)

over the candidate layers and d in [1, d_max]; plain decoding loads L layers per token
(TPL = 1/L), so when no (l, d) beats 1/L the step is a plain decoding step (d = 0): choosing no
speculation is a correct outcome, not a failure. a_l is estimated online from "shadow tokens":
every verification forward also returns the hidden states of all candidate layers
(`hidden_layers=`); each is put through the final norm + LM head and compared with the tokens
the verification committed (greedy: top-1 agreement; T > 0: the expected acceptance
sum_x min(q_l(x), p(x)) of that position, which is what speculative sampling would accept).
The running estimate per layer starts from a prior (prior_accept, weight prior_weight in
tokens) and is per example (no state across examples).

KV cache: the draft's KV for layers < l is exactly the target's KV for those layers (same
weights, same tokens), so the draft shares the target's cache (LayerSkip's approach):
`engine.forward_layers(ids, 0, l)` appends KV to layers < l only; before verification the draft
positions are cut off again (`engine.crop_to`) and the verification forward recomputes every
layer for them. That is the cost TPL counts (d drafts x l layers + one L-layer verification);
LayerSkip's further reuse of the draft's KV for layers < l during verification is not done.
Dynamic draft exiting (the paper's second mechanism, `draft_exit_threshold` > 0): within a
round, drafting stops early when the exit's confidence in the token it just drafted (its
probability under the exit's processed distribution q) falls below the threshold; that token is
still verified, and d (the TPL choice) is only the round's maximum. The threshold is an input
(0 = off: the fixed d of the TPL choice); shorter drafts keep the method lossless.
Verification is standard speculative sampling (draft q = the exit's processed distribution):
lossless, token-identical to greedy at T = 0.

Honest expectations: the paper's 2.16-2.62x comes from LayerSkip models TRAINED for early
exit. The models here are not: measured top-1 agreement of an exit with the final layer on
SmolLM2-135M (30 layers) is 0.19 at l = 14, 0.27 at 20, 0.53 at 26, 0.70 at 29, where
TPL(l, d) < 1/L for every d, so DEL settles on plain decoding and pays only the shadow-token
overhead (one batched LM-head product over the candidates per verification; `shadow_every`
thins it). TPL, like the paper, counts decoder layers only: the LM head of every draft token
(a large share of a 135M model) is not in the denominator.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import draw


def expected_tokens(alpha: float, d: int) -> float:
    """E[tokens per step] for d drafts with i.i.d. acceptance alpha: (1 - a^(d+1)) / (1 - a)."""
    if alpha >= 1.0 - 1e-12:
        return float(d + 1)
    return (1.0 - alpha ** (d + 1)) / (1.0 - alpha)


def choose_exit(alphas: dict[int, float], num_layers: int, d_max: int) -> tuple[int | None, int, float]:
    """(l, d, TPL) maximising TPL(l, d) = E[tokens] / (d * l + L); (None, 0, 1/L) = plain decoding
    when nothing beats it (ties go to plain decoding)."""
    best = (None, 0, 1.0 / num_layers)
    for layer in sorted(alphas):
        for d in range(1, d_max + 1):
            tpl = expected_tokens(alphas[layer], d) / (d * layer + num_layers)
            if tpl > best[2]:
                best = (layer, d, tpl)
    return best


class DEL(Strategy):
    name = "del_exit"
    needs = frozenset({"rollback", "early_exit", "hidden_states"})

    def __init__(self, exit_layers=(), exit_stride: int = 4, d_max: int = 8, prior_accept: float = 0.5,
                 prior_weight: float = 4.0, shadow_every: int = 1, draft_exit_threshold: float = 0.0,
                 sampling=None):
        super().__init__(sampling)
        if not 0.0 <= draft_exit_threshold <= 1.0:
            raise ConfigError(f"del: draft_exit_threshold must be in [0, 1] (got {draft_exit_threshold})")
        self.draft_exit_threshold = float(draft_exit_threshold)
        exit_layers = [int(x) for x in (exit_layers or [])]
        if any(x < 1 for x in exit_layers):
            raise ConfigError(f"del: exit_layers must be >= 1 (got {exit_layers})")
        if exit_stride < 1 or d_max < 1 or shadow_every < 1:
            raise ConfigError(f"del: need exit_stride >= 1, d_max >= 1, shadow_every >= 1 "
                              f"(got {exit_stride}, {d_max}, {shadow_every})")
        if not 0 < prior_accept < 1 or prior_weight <= 0:
            raise ConfigError(f"del: need 0 < prior_accept < 1 and prior_weight > 0 (got {prior_accept}, {prior_weight})")
        self.exit_layers = sorted(set(exit_layers))
        self.exit_stride, self.d_max, self.shadow_every = exit_stride, d_max, shadow_every
        self.prior_accept, self.prior_weight = prior_accept, prior_weight

    def params(self) -> dict:
        return {**super().params(), "exit_layers": ",".join(map(str, self.exit_layers))}

    def candidates(self, num_layers: int) -> list[int]:
        """Candidate exit layers below L: the configured list (entries >= L dropped), or every
        exit_stride-th layer; when that leaves none (a very shallow model), every layer 1..L-1."""
        if self.exit_layers:
            c = [x for x in self.exit_layers if x < num_layers]
        else:
            c = list(range(self.exit_stride, num_layers, self.exit_stride))
        return c or list(range(1, num_layers))

    def decode(self, state):
        target, s = state.target, self.sampling
        L = target.num_layers
        cands = self.candidates(L)
        hits = {x: 0.0 for x in cands}  # shadow agreement (greedy) / expected acceptance (T > 0)
        seen = {x: 0 for x in cands}
        ex = state.extra
        if self.draft_exit_threshold:
            ex["del_draft_exits"] = 0  # rounds whose drafting stopped early (dynamic draft exiting)
        ex.update({"del_plain_steps": 0, "del_layers_loaded": 0, **{f"del_steps_l{x}": 0 for x in cands},
                   **{f"del_len_{d}": 0 for d in range(1, self.d_max + 1)},
                   **{f"del_shadow_hits_l{x}": 0.0 for x in cands}, **{f"del_shadow_n_l{x}": 0 for x in cands}})
        step = 0
        while not state.done:
            remaining = state.remaining
            layer, d = None, 0
            if target.length > 0 and remaining > 1:  # the first step prefills: the draft needs the prompt's KV
                alphas = {x: (self.prior_accept * self.prior_weight + hits[x]) / (self.prior_weight + seen[x])
                          for x in cands}
                layer, d, _ = choose_exit(alphas, L, min(self.d_max, remaining - 1))
            base = target.length
            drafts, qs = [], []
            if d:
                feed = state.seq[base:]
                for _ in range(d):
                    _, q_logits = target.forward_layers(feed, 0, layer, last_only=True)
                    state.self_draft_forwards += 1  # early-exit forwards of the target's first l layers
                    x, q = draw(s, q_logits, state.rng)
                    if q is not None:
                        qs.append(q)
                    drafts.append(x)
                    feed = [x]
                    if self.draft_exit_threshold and len(drafts) < d:  # dynamic draft exiting
                        conf = float(q[x]) if q is not None else float(torch.softmax(q_logits.float(), -1)[x])
                        if conf < self.draft_exit_threshold:  # the exit is unsure: verify what we have
                            ex["del_draft_exits"] += 1
                            break
                d = len(drafts)
                target.crop_to(base)  # the verification recomputes every layer for these positions
            shadow = cands if step % self.shadow_every == 0 else []
            fed = state.seq[base:] + drafts
            logits = target.forward(fed, hidden_layers=shadow)  # feed (with the shadow layers) ...
            r0 = len(fed) - (d + 1)
            p = self.target_probs(logits[r0:])
            n, nxt = self.accept(state, p, drafts, torch.stack(qs) if qs else None)  # ... then accept
            if d:
                target.rollback(d - n)
                ex[f"del_steps_l{layer}"] += 1
                ex[f"del_len_{d}"] += 1
            else:
                ex["del_plain_steps"] += 1
            ex["del_layers_loaded"] += d * (layer or 0) + L
            new = drafts[:n] + [nxt]
            if shadow:
                self._shadow(target, shadow, r0, new, p[: n + 1], hits, seen)
            state.emit(new)
            step += 1
        for x in cands:
            ex[f"del_shadow_hits_l{x}"], ex[f"del_shadow_n_l{x}"] = hits[x], seen[x]

    def _shadow(self, target, layers, r0: int, new: list[int], p: torch.Tensor, hits: dict, seen: dict) -> None:
        """Shadow tokens: each candidate layer's hidden states at the committed positions, through
        the final norm + LM head (one batched product), scored against the committed tokens."""
        m = len(new)
        h = torch.stack([target.hidden[x][r0:r0 + m] for x in layers])  # [C, m, d]
        logits = target.head(h)  # [C, m, V]
        if self.sampling.greedy:
            score = (logits.argmax(-1) == torch.tensor(new, device=logits.device)).float().sum(-1)
        else:
            score = torch.minimum(self.sampling.probs(logits), p.to(logits.device).unsqueeze(0)).sum(-1).sum(-1)
        for x, sc in zip(layers, score.tolist()):
            hits[x] += sc
            seen[x] += m
