"""Speculative decoding of a BATCH of concurrent requests (the serving regime SmartSpec is about).

    out = batched_speculative(target, draft, prompts, max_new_tokens, rule)

B prompts decode together: the target and the draft each hold ONE batched KV cache (an engine
`Fork`: the prompts' longest common prefix prefilled once, each prompt's remainder a row). Every
step:
  1. `rule` chooses ONE speculation length K for the whole batch (fixed K, or SmartSpec's
     goodput rule below), capped by the smallest remaining budget;
  2. the draft catches up with the tokens it has not seen (one batched forward, rows of
     different lengths) and proposes K tokens per row greedily (K - 1 more batched forwards);
  3. the target verifies every row's K drafts in ONE batched forward (each row fed its
     pending tokens + K drafts); per row the longest greedy-agreeing prefix is accepted and the
     target's own next token appended (lossless at T = 0: each row's output is the target's
     greedy output for that prompt, up to floating-point ties of the batched forward);
  4. rejected drafts are dropped from both caches (`Fork.drop_last`); finished rows (EOS or
     budget) leave the batch (`Fork.select`), so B shrinks as requests complete.
K = 0 is plain batched greedy decoding (one target forward per token per batch; the draft idles).

SmartSpec's batch rule (Liu et al. 2024, goodput = generated tokens per second of the batch):
    K* = argmax_K  sum_r E[tokens_r | K, alpha_r] / (K * t_draft(B) + t_target(B, K + 1))
with E = (1 - alpha^(K+1)) / (1 - alpha), alpha_r = row r's acceptance so far (Beta prior) and
the step times t_target(B, L) (B rows x L tokens) and t_draft(B) an explicit, recorded INPUT
(a table measured once by the benchmark, never timed inside the decode). Under light load a
step verifying B(K+1) tokens costs about one forward, so long K wins; under heavy load (many
rows) verification becomes compute-bound and the rule shortens K, down to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from strategies.smartspec import expected_tokens


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every prompt at least one token of its own."""
    n = min(len(p) for p in prompts) - 1
    for i in range(max(n, 0)):
        t = prompts[0][i]
        if any(p[i] != t for p in prompts):
            return i
    return max(n, 0)


@dataclass
class BatchResult:
    tokens: list[list[int]]  # per prompt, in the input order
    steps: list[dict] = field(default_factory=list)  # per step: B, K, accepted (sum), new tokens
    target_forwards: int = 0
    draft_forwards: int = 0

    @property
    def k_histogram(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self.steps:
            out[s["K"]] = out.get(s["K"], 0) + 1
        return dict(sorted(out.items()))


class FixedK:
    def __init__(self, k: int):
        self.k = int(k)

    def __call__(self, B: int, alphas: Sequence[float]) -> int:
        return self.k


class GoodputRule:
    """SmartSpec's batch-level choice of K from a recorded step-time table."""

    def __init__(self, t_target: dict, t_draft: dict, k_max: int = 8):
        # t_target[B][L] and t_draft[B] in seconds, B and L as ints (JSON keys may be strings)
        self.t_target = {int(b): {int(l): float(v) for l, v in row.items()} for b, row in t_target.items()}
        self.t_draft = {int(b): float(v) for b, v in t_draft.items()}
        self.k_max = int(k_max)

    def _lookup(self, table: dict, key: int):
        keys = sorted(table)
        below = [k for k in keys if k <= key]
        above = [k for k in keys if k >= key]
        lo, hi = (below[-1] if below else keys[0]), (above[0] if above else keys[-1])
        if lo == hi:
            return table[lo]
        w = (key - lo) / (hi - lo)
        if isinstance(table[lo], dict):
            return {l: (1 - w) * table[lo][l] + w * table[hi][l] for l in table[lo] if l in table[hi]}
        return (1 - w) * table[lo] + w * table[hi]

    def step_time(self, B: int, k: int) -> float:
        """K draft steps + one target forward of K + 1 tokens per row; both tables read
        piecewise-linearly between the measured neighbours (clamped outside the measured range)."""
        return k * self._lookup(self.t_draft, B) + self._lookup(self._lookup(self.t_target, B), k + 1)

    def __call__(self, B: int, alphas: Sequence[float]) -> int:
        def goodput(k):
            return sum(expected_tokens(k, a) for a in alphas) / self.step_time(B, k)

        return max(range(0, self.k_max + 1), key=goodput)


@torch.inference_mode()
def batched_speculative(target, draft, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                        rule: Callable[[int, Sequence[float]], int], prior_accept: float = 0.6,
                        prior_weight: float = 4.0, pooled: bool = False) -> BatchResult:
    """Decode `prompts` as one batch (module docstring). The acceptance rate the rule sees:
    per row (`pooled=False`: that request's accepted / drafted tokens so far) or the batch's
    (`pooled=True`: all rows' counts together, one estimate for every row, as a server tracks its
    system-wide acceptance), both with a Beta prior of `prior_weight` tokens at `prior_accept`.
    A request whose estimate falls where the rule picks K = 0 stops drafting and so stops
    updating its own estimate: a pooled estimate keeps learning from the other rows, and a
    prior measured on other prompts (an explicit input) starts it where the pair really is."""
    prompts = [list(p) for p in prompts]
    P = common_prefix(prompts)
    if P < 1:
        raise ValueError("batched_speculative: the prompts share no first token (the fork needs a common prefix)")
    f0t, f0d = target.forwards, draft.forwards if draft is not None else 0
    target.reset()
    tf = target.fork(prompts[0][:P], [p[P:] for p in prompts])
    df = None
    if draft is not None:
        draft.reset()
        df = draft.fork(prompts[0][:P], [p[P:] for p in prompts])
    eos = target.eos_ids
    out = [[] for _ in prompts]
    rows = list(range(len(prompts)))  # fork row i holds prompt rows[i]
    first = tf.logits.argmax(-1).tolist()
    t_pend, d_pend = [[t] for t in first], [[t] for t in first]
    drafted, accepted = [0] * len(prompts), [0] * len(prompts)
    for r, t in zip(rows, first):
        out[r].append(t)
    res = BatchResult(tokens=out)

    def prune():
        nonlocal rows, t_pend, d_pend
        keep = [i for i, r in enumerate(rows) if out[r][-1] not in eos and len(out[r]) < max_new_tokens]
        if len(keep) < len(rows):
            if keep:
                tf.select(keep)
                if df is not None:
                    df.select(keep)
            rows = [rows[i] for i in keep]
            t_pend = [t_pend[i] for i in keep]
            d_pend = [d_pend[i] for i in keep]

    prune()
    while rows:
        B = len(rows)
        if pooled:
            a_all = (sum(accepted) + prior_accept * prior_weight) / (sum(drafted) + prior_weight)
            alphas = [min(max(a_all, 0.0), 0.999)] * B
        else:
            alphas = [min(max((accepted[r] + prior_accept * prior_weight) / (drafted[r] + prior_weight), 0.0), 0.999)
                      for r in rows]
        K = int(rule(B, alphas)) if df is not None else 0
        K = max(0, min(K, min(max_new_tokens - len(out[r]) - 1 for r in rows)))
        drafts = [[] for _ in rows]
        if K > 0:
            df.feed(d_pend)
            for j in range(K):
                nxt = df.logits.argmax(-1).tolist()
                for i in range(B):
                    drafts[i].append(nxt[i])
                if j < K - 1:
                    df.step(nxt)
        logits = tf.feed([t_pend[i] + drafts[i] for i in range(B)])  # [B, M, V]
        step_acc, step_new = 0, 0
        for i, r in enumerate(rows):
            tail = logits[i, logits.shape[1] - K - 1:].argmax(-1).tolist()  # greedy after pending, d_1..d_K
            n = 0
            while n < K and drafts[i][n] == tail[n]:
                n += 1
            nxt = tail[n]
            new = drafts[i][:n] + [nxt]
            # stop at EOS / budget inside the accepted run
            for j, t in enumerate(new):
                if t in eos or len(out[r]) + j + 1 >= max_new_tokens:
                    new = new[: j + 1]
                    break
            out[r].extend(new)
            tf.drop_last(i, K - n)
            if K > 0:
                fed = K - 1  # the draft consumed d_1 .. d_{K-1}
                keep = min(n, fed)
                df.drop_last(i, fed - keep)
                d_pend[i] = drafts[i][keep:n] + [nxt]
            else:
                d_pend[i] = d_pend[i] + [nxt] if df is not None else []
            t_pend[i] = [nxt]
            drafted[r] += K
            accepted[r] += n
            step_acc += n
            step_new += len(new)
        res.steps.append({"B": B, "K": K, "accepted": step_acc, "new_tokens": step_new})
        prune()
    res.target_forwards = target.forwards - f0t
    res.draft_forwards = (draft.forwards - f0d) if draft is not None else 0
    return res
