"""Chain drafting: draw a draft token, and propose a chain from a draft engine.

`draw(sampling, logits, rng)`: one draft token and its distribution q (None at T = 0, where a
draft is a point mass: the argmax).

`ChainDrafter(engine, sampling)`: the draft side of speculative decoding, shared by
speculative, SmartSpec and both SpecDec++ variants (a self-draft is a draft engine made of the
target's first layers):

    drafts, q = drafter.propose(state, k, stop=...)   # catch up on unseen tokens, draft up to k
    new = strategy.verify_step(state, drafts, q)       # the target verifies
    drafter.update(state, new)                         # keep only what was accepted
    state.emit(new)

`stop(i, logits, q, x, hidden)` is asked after the i-th draft x (its distribution `logits`, q)
whether to stop early (adaptive lengths). With `judge_layer` set, x is fed to the draft FIRST
and its hidden state at that layer is passed as `hidden` (SpecDec++'s head judges the token it
sees); otherwise x is fed only if drafting goes on.

Two options make the DRAFT cheaper without changing what it proposes (the target verifies
every token as before, so both stay lossless at any temperature):

- `vocab` = N > 0: the draft's LM head is computed only for token ids < N (BPE vocabularies are
  ordered by merge rank, a corpus-free proxy of frequency) plus every id of the prompt and of
  the output so far (`engine.restrict_head` / `extend_head`); the draft can then only propose
  those tokens (others get probability 0 in q). Saves the head's share of each draft forward.
- `lookup` = n > 0: self-lookup. Before a draft forward, the latest earlier occurrence of the
  last 1..n tokens of prompt + output + drafts (prompt lookup's matcher, `lookup`) proposes up
  to `lookup_k` continuation tokens c, fed to the DRAFT in the same forward as its current token
  x. Row j of that forward is the draft's distribution after x, c[:j]; while the drafts it
  then draws equal c (x_{j+1} == c[j]) their distributions are already computed, so no forward
  is needed; at the first difference the draft rolls back the unused slots and goes on. The
  chain is the one the plain drafter would draw (each x drawn from the row computed for
  exactly the drafts before it), with fewer draft forwards when the lookup predicts the draft.
"""

from __future__ import annotations

import numpy as np
import torch

from strategies.core import probs as P


def lookup(seq: np.ndarray, max_ngram: int, min_ngram: int, k: int) -> list[int]:
    """Continuation (up to k tokens) of the latest earlier match of seq's last n-gram, n from
    max_ngram down to min_ngram (prompt lookup decoding's matcher)."""
    L = len(seq)
    if k <= 0:
        return []
    for n in range(max_ngram, min_ngram - 1, -1):
        if L <= n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(seq[: L - 1], n)  # starts 0..L-1-n
        hits = np.flatnonzero((windows == seq[L - n:]).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return seq[start: start + k].tolist()
    return []


def draw(sampling, logits: torch.Tensor, rng: torch.Generator) -> tuple[int, torch.Tensor | None]:
    """A draft token from draft logits [V]: the argmax at T = 0 (q None), else a draw from q."""
    if sampling.greedy:
        return int(logits.argmax()), None
    q = sampling.probs(logits)
    return P.sample(q, rng), q


class ChainDrafter:
    def __init__(self, engine, sampling, vocab: int = 0, lookup: int = 0, lookup_k: int = 4):
        self.engine, self.sampling = engine, sampling
        self.vocab, self.lookup, self.lookup_k = int(vocab), int(lookup), int(lookup_k)
        self._restricted = False

    def begin(self, state) -> None:
        """Start of an example: restrict the draft's head (vocab > 0) to ids < vocab + the prompt."""
        if self.vocab > 0:
            ids = set(range(min(self.vocab, self.engine.vocab_size))) | set(state.seq)
            self.engine.restrict_head(sorted(ids))
            self._restricted = True

    def end(self) -> None:
        """End of an example (always called): the draft engine gets its full head back."""
        if self._restricted:
            self.engine.restrict_head(None)
            self._restricted = False

    def _feed(self, ids: list[int], ctx: list[int], room: int, hidden: list[int]):
        """Feed ids to the draft (plus, with lookup, up to `room` lookup tokens continuing ctx + ids).
        Returns (logits after ids [V], hidden of ids[-1] at the judge layer or None, queue): the
        queue holds (token c_j, logits after it, its hidden state) for the lookup tokens."""
        d = self.engine
        c = lookup(np.asarray(ctx + ids), self.lookup, 1, room) if self.lookup and room > 0 else []
        if not c:
            logits = d.forward(ids, hidden_layers=hidden, last_only=True)
            return logits, (d.hidden[hidden[0]][-1] if hidden else None), []
        rows = d.forward(ids + c, hidden_layers=hidden)[len(ids) - 1:]  # [1 + len(c), V]
        hs = d.hidden[hidden[0]][len(ids) - 1:] if hidden else [None] * len(rows)
        return rows[0], hs[0], [(t, rows[j + 1], hs[j + 1]) for j, t in enumerate(c)]

    def propose(self, state, k: int, stop=None, judge_layer: int | None = None) -> tuple[list[int], torch.Tensor | None]:
        """Up to k drafts after state.seq and their q [n, V] (None at T = 0)."""
        d = self.engine
        drafts, qs = [], []
        if k <= 0:
            return drafts, None
        hidden = [] if judge_layer is None else [judge_layer]
        seq = state.seq
        # catch up on the tokens the draft has not seen; logits of x_1 (+ lookup rows)
        logits, _, queue = self._feed(seq[d.length:], seq[:d.length], k - 1, [])
        while True:
            x, q = draw(self.sampling, logits, state.rng)
            drafts.append(x)
            if q is not None:
                qs.append(q)
            if len(drafts) >= k:
                break
            if judge_layer is None and stop is not None and stop(len(drafts), logits, q, x, None):
                break
            if queue and queue[0][0] == x:  # the lookup predicted this draft: its row is computed
                _, nxt, hx = queue.pop(0)
            else:
                if queue:  # the lookup went wrong here: drop its unused slots
                    d.rollback(len(queue))
                nxt, hx, queue = self._feed([x], seq + drafts[:-1], k - len(drafts) - 1, hidden)
            if judge_layer is not None and stop(len(drafts), logits, q, x, hx):
                break
            logits = nxt
        if queue:  # lookup slots never consumed (past the last token fed as a draft)
            d.rollback(len(queue))
        return drafts, (torch.stack(qs) if qs else None)

    def update(self, state, new: list[int]) -> None:
        """After verification (before `state.emit(new)`): the draft cached state.seq + some drafts;
        keep what was accepted (all of new but the correction / bonus token). A restricted head
        learns the new tokens it did not have (the target emitted them, so they may recur)."""
        self.engine.truncate_to(min(self.engine.length, len(state.seq) + len(new) - 1))
        if self._restricted:
            self.engine.extend_head(new)
