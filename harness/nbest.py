"""The N-best prompt block (HyPoradise's format): written by the task, read by the strategies
that only see the prompt (nbest_first, nbest_rerank). A neutral module both import.

    ### Best-hypothesis:
    <1-best>

    ### Other-hypothesis:
    <2nd>
    ...

    ### Response:
"""

from __future__ import annotations


BEST = "### Best-hypothesis:\n"
OTHER = "\n\n### Other-hypothesis:\n"
RESPONSE = "\n\n### Response:"


def format_nbest(nbest: list[str]) -> str:
    """The N-best block: best hypothesis, then the others one per line (an empty one = empty line)."""
    block = BEST + nbest[0]
    if len(nbest) > 1:
        block += OTHER + "\n".join(nbest[1:])
    return block + RESPONSE + "\n"


def parse_nbest(text: str) -> list[str]:
    """The N-best list of the LAST block in `text` (a prompt, possibly decoded from token ids).

    Pure inverse of `format_nbest` (hypotheses hold no newline): used by the non-generative
    strategies, which only see the prompt. Raises ValueError when there is no block.
    """
    k = text.rfind(BEST)
    if k < 0:
        raise ValueError("the prompt holds no N-best block ('### Best-hypothesis:'); use a HyPoradise task")
    body = text[k + len(BEST):]
    end = body.find(RESPONSE)
    if end < 0:
        raise ValueError("the N-best block has no '### Response:' line")
    body = body[:end]
    o = body.find(OTHER)
    if o < 0:
        return [body.strip()]
    return [body[:o].strip()] + [h.strip() for h in body[o + len(OTHER):].split("\n")]
