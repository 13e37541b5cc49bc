"""Speculative decoding with a draft model (SpS): Leviathan et al. 2023; Chen et al. 2023.

Each step: (1) the draft q proposes K tokens autoregressively; (2) the target p scores all
K + 1 positions in ONE forward; (3) draft x is accepted with probability min(1, p(x)/q(x)),
the first rejection resamples from norm(max(0, p - q)); all accepted -> a bonus token from p.
At temperature 0 this is exactly greedy decoding of the target. ../shared/STRATEGIES.md §A.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.base import Strategy


class Speculative(Strategy):
    name = "speculative"
    needs = frozenset({"rollback"})

    def __init__(self, draft, k: int = 4, sampling=None):
        super().__init__(sampling)
        if k < 1:
            raise ConfigError(f"speculative: k must be >= 1, got {k}")
        self.draft = draft  # ModelSpec; the runner loads it and passes the engine
        self.k = k

    def generate(self, target, prompt_ids, max_new_tokens, rng: torch.Generator, draft=None):
        s = self.sampling
        trace, snap = self.begin(target, draft)
        seq = list(prompt_ids)  # the first verification forward also prefills the prompt
        while not trace.done(target.eos_ids, max_new_tokens):
            k = self.draft_length(trace, max_new_tokens - len(trace.tokens))
            # 1. draft k tokens with q (the draft catches up on tokens it has not seen first)
            drafts, qs, feed, p_all_accepted = [], [], seq[draft.length:], 1.0
            for _ in range(k):
                q_logits = draft.forward(feed, last_only=True)  # [V]
                q = None if s.greedy else s.probs(q_logits)  # greedy needs no q (one-hot)
                x = int(q_logits.argmax()) if s.greedy else int(torch.multinomial(q, 1, generator=rng))
                if not s.greedy:
                    qs.append(q)
                drafts.append(x)
                feed = [x]
                p_all_accepted *= self.accept_estimate(q_logits, q, x)
                if self.stop_drafting(len(drafts), p_all_accepted):
                    break
            # 2-3. verify in one target forward, accept/reject, correction or bonus token
            new = self.verify_step(target, seq, drafts, torch.stack(qs) if qs else None, rng, trace)
            # the draft cached seq + drafts[:k-1]; keep only what was accepted
            draft.truncate_to(min(draft.length, len(seq) + len(new) - 1))
            seq += new
            trace.emit(new)
        return self.end(trace, snap, target, max_new_tokens, draft)

    def draft_length(self, trace, remaining: int) -> int:
        """Draft tokens for the next step (fixed k here; adaptive methods override this)."""
        return min(self.k, remaining)

    def accept_estimate(self, q_logits, q, x: int) -> float:
        """Predicted probability that draft x will be accepted (used by adaptive stopping)."""
        return 1.0

    def stop_drafting(self, n_drafted: int, p_all_accepted: float) -> bool:
        """Stop drafting early? Fixed-k speculative decoding never does."""
        return False
