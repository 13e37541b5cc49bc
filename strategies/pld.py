"""Prompt lookup decoding (Saxena 2023; transformers' `prompt_lookup_num_tokens`).

Model-free drafting: find the latest earlier occurrence of the last n tokens (n from
max_ngram down to min_ngram) in prompt + output, propose the k tokens that followed it, and
verify them in one target forward with the standard rule (drafts are deterministic, so q is a
point mass: accept x with probability p(x), else resample from p without x). Lossless.
"""

from __future__ import annotations

import numpy as np

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import lookup  # noqa: F401 - the n-gram lookup lives with the drafters


class PromptLookup(Strategy):
    name = "pld"
    needs = frozenset({"rollback"})

    def __init__(self, k: int = 10, max_ngram: int = 2, min_ngram: int = 1, sampling=None):
        super().__init__(sampling)
        if k < 1 or not 1 <= min_ngram <= max_ngram:
            raise ConfigError(f"pld: need k >= 1 and 1 <= min_ngram <= max_ngram (got {k}, {min_ngram}, {max_ngram})")
        self.k, self.max_ngram, self.min_ngram = k, max_ngram, min_ngram

    def decode(self, state):
        while not state.done:  # the first verification forward also prefills the prompt
            drafts = lookup(np.asarray(state.seq), self.max_ngram, self.min_ngram, min(self.k, state.remaining))
            state.emit(self.verify_step(state, drafts, None))
