"""Speculative decoding with a draft model (SpS): Leviathan et al. 2023; Chen et al. 2023.

Each step: (1) the draft q proposes K tokens autoregressively; (2) the target p scores all
K + 1 positions in ONE forward; (3) draft x is accepted with probability min(1, p(x)/q(x)),
the first rejection resamples from norm(max(0, p - q)); all accepted -> a bonus token from p.
At temperature 0 this is exactly greedy decoding of the target.

Drafting options shared by every chain-drafting method (speculative, smartspec, specdec_pp,
specdec_pp_confidence; strategies/core/drafters.py): `draft_vocab` (the draft's LM head over
ids < N plus the prompt's and output's ids) and `draft_lookup` / `draft_lookup_k` (the draft
checks an n-gram lookup of its own next tokens in the same forward). Both make the draft
cheaper; the target verifies as always, so the method stays lossless. 0 = off (the default).
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import ChainDrafter


class Speculative(Strategy):
    name = "speculative"
    needs = frozenset({"rollback"})

    DRAFTING = ("draft_vocab", "draft_lookup", "draft_lookup_k")  # off at 0: not in params() (old rows keep theirs)

    def __init__(self, draft, k: int = 4, sampling=None, draft_vocab: int = 0, draft_lookup: int = 0,
                 draft_lookup_k: int = 4):
        super().__init__(sampling)
        if k < 1:
            raise ConfigError(f"speculative: k must be >= 1, got {k}")
        if draft_vocab < 0 or draft_lookup < 0 or draft_lookup_k < 1:
            raise ConfigError(f"{self.name}: need draft_vocab >= 0, draft_lookup >= 0 and draft_lookup_k >= 1 "
                              f"(got {draft_vocab}, {draft_lookup}, {draft_lookup_k})")
        self.draft = draft  # ModelSpec; the runner loads it and passes the engine
        self.k = k
        self.draft_vocab, self.draft_lookup, self.draft_lookup_k = int(draft_vocab), int(draft_lookup), int(draft_lookup_k)

    def params(self) -> dict:
        out = super().params()
        if not self.draft_vocab:
            out.pop("draft_vocab", None)
        if not self.draft_lookup:
            out.pop("draft_lookup", None)
            out.pop("draft_lookup_k", None)
        return out

    def decode(self, state):
        drafter = ChainDrafter(state.draft, self.sampling, self.draft_vocab, self.draft_lookup, self.draft_lookup_k)
        drafter.begin(state)
        try:
            while not state.done:
                k = self.draft_length(state)
                drafts, q = drafter.propose(state, k, self.stopper(state), self.judge_layer(state))  # 1. draft
                new = self.verify_step(state, drafts, q)  # 2-3. one target forward, accept, correct
                drafter.update(state, new)
                state.emit(new)
        finally:
            drafter.end()

    def stopper(self, state):
        """Early stop of one proposal (None: always draft k). Adaptive methods override this."""
        return None

    def judge_layer(self, state) -> int | None:
        """A draft layer whose hidden state the stopper reads (None: none)."""
        return None

    def draft_length(self, state) -> int:
        """Draft tokens for the next step (fixed k here; adaptive methods override this)."""
        return min(self.k, state.remaining)
