"""Speculative decoding with a draft model (SpS): Leviathan et al. 2023; Chen et al. 2023.

Each step: (1) the draft q proposes K tokens autoregressively; (2) the target p scores all
K + 1 positions in ONE forward; (3) draft x is accepted with probability min(1, p(x)/q(x)),
the first rejection resamples from norm(max(0, p - q)); all accepted -> a bonus token from p.
At temperature 0 this is exactly greedy decoding of the target.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import ChainDrafter


class Speculative(Strategy):
    name = "speculative"
    needs = frozenset({"rollback"})

    def __init__(self, draft, k: int = 4, sampling=None):
        super().__init__(sampling)
        if k < 1:
            raise ConfigError(f"speculative: k must be >= 1, got {k}")
        self.draft = draft  # ModelSpec; the runner loads it and passes the engine
        self.k = k

    def decode(self, state):
        drafter = ChainDrafter(state.draft, self.sampling)
        while not state.done:
            k = self.draft_length(state)
            drafts, q = drafter.propose(state, k, self.stopper(state), self.judge_layer(state))  # 1. draft
            new = self.verify_step(state, drafts, q)  # 2-3. one target forward, accept, correct
            drafter.update(state, new)
            state.emit(new)

    def stopper(self, state):
        """Early stop of one proposal (None: always draft k). Adaptive methods override this."""
        return None

    def judge_layer(self, state) -> int | None:
        """A draft layer whose hidden state the stopper reads (None: none)."""
        return None

    def draft_length(self, state) -> int:
        """Draft tokens for the next step (fixed k here; adaptive methods override this)."""
        return min(self.k, state.remaining)
