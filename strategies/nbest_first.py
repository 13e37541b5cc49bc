"""N-best 1-best: emit the first hypothesis of the prompt's N-best block, with no model forward.

For N-best tasks (HyPoradise): the hypotheses reach the strategy only through the prompt, in the
task's block format; the prompt ids are decoded with the target's tokenizer and parsed with
`tasks.hyporadise.parse_nbest` (a pure function of the text, no task or reference involved).
The 1-best is re-encoded by the target tokenizer and emitted, followed by an EOS, so the row's
text and token counts come out like any other strategy's. Not lossless: it is not greedy.
"""

from __future__ import annotations

import torch

from strategies.base import Strategy
from tasks.hyporadise import parse_nbest


def prompt_nbest(target, prompt_ids) -> list[str]:
    """The N-best list carried by the prompt (ValueError when the prompt has none)."""
    return parse_nbest(target.decode(prompt_ids))


def encode_text(target, text: str) -> list[int]:
    """Token ids of `text` under the target tokenizer, without special tokens."""
    return [int(t) for t in target.tokenizer.encode(text, add_special_tokens=False)]


def eos_id(target) -> int | None:
    """The tokenizer's EOS when the engine stops on it, else the smallest stop id (None if none)."""
    tok = getattr(target.tokenizer, "eos_token_id", None)
    if isinstance(tok, int) and tok in target.eos_ids:
        return tok
    return min(target.eos_ids) if target.eos_ids else None


def emit_text(trace, target, text: str) -> None:
    eos = eos_id(target)
    trace.emit(encode_text(target, text) + ([eos] if eos is not None else []))


class NBestFirst(Strategy):
    name = "nbest_first"
    lossless = False  # emits the ASR 1-best, whatever the model would say

    def __init__(self):
        super().__init__()

    def generate(self, target, prompt_ids, max_new_tokens, rng: torch.Generator, draft=None):
        trace, snap = self.begin(target)
        nbest = prompt_nbest(target, prompt_ids)
        emit_text(trace, target, nbest[0])
        trace.extra = {"candidates": len(nbest), "chosen_rank": 0}
        return self.end(trace, snap, target, max_new_tokens)
