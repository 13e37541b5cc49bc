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


def lookup(seq: np.ndarray, max_ngram: int, min_ngram: int, k: int) -> list[int]:
    """Continuation (up to k tokens) of the latest earlier match of seq's last n-gram."""
    L = len(seq)
    for n in range(max_ngram, min_ngram - 1, -1):
        if L <= n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(seq[: L - 1], n)  # starts 0..L-1-n
        hits = np.flatnonzero((windows == seq[L - n:]).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return seq[start: start + k].tolist()
    return []


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
