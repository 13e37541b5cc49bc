"""N-best 1-best: emit the first hypothesis of the prompt's N-best block, with no model forward.

For N-best tasks (HyPoradise): the hypotheses reach the strategy through the prompt object
(`Prompt.nbest`, the list the prompt's block shows; without it, the prompt text is parsed with
`harness.nbest.parse_nbest`, a pure function of the text: no task or reference involved). The
1-best is encoded into the target's token ids and emitted, followed by an EOS, so the row's text
and token counts come out like any other strategy's. Not lossless: it is not greedy.
"""

from __future__ import annotations

from strategies.core.base import Strategy
from harness.nbest import parse_nbest


def hypotheses(state) -> list[str]:
    """The N-best list of this prompt: given by the task (state.prompt.nbest), else parsed from
    the prompt text with harness.nbest (ValueError when the prompt holds none)."""
    if state.prompt.nbest is not None:
        return list(state.prompt.nbest)
    return parse_nbest(state.target.decode(state.prompt.ids))


def emit_text(state, text: str) -> None:
    """Emit `text` as the target's token ids, then its EOS (the model's own EOS token when the engine
    stops on it, else the smallest stop id)."""
    target = state.target
    eos = target.special_id("eos")
    if eos not in target.eos_ids:
        eos = min(target.eos_ids) if target.eos_ids else None
    state.emit(target.encode(text) + ([eos] if eos is not None else []))


class NBestFirst(Strategy):
    name = "nbest_first"
    lossless = False  # emits the ASR 1-best, whatever the model would say

    def __init__(self):
        super().__init__()

    def decode(self, state):
        nbest = hypotheses(state)
        emit_text(state, nbest[0])
        state.extra.update({"candidates": len(nbest), "chosen_rank": 0})
