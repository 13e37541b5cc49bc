"""A verdict for lossless decoding in low precision: token identity, or tie-consistency.

In bf16 a lossless method can differ from plain greedy decoding without any bug: a batched
verification forward rounds differently from a one-token forward, and where the top two logits
are within rounding of each other the argmax flips (the README's tables show 3 of 6 prompts
differing in bf16, for our methods and for transformers' alike). Token identity is then too
strict a test, and "different" says nothing about whether the method is right.

The teacher-forced check: run the target ONCE over prompt + the method's output and ask, for
every emitted token, how far its log-probability lies below the target's best token at that
position (its deficit, in nats). An output is TIE-CONSISTENT at gap g when every deficit is at
most g: each token is the target's argmax or within g of it. A correct method in bf16 passes
at a small g (its flips are near-ties); a real bug (a wrong position, a wrong cache slot, a
wrong bonus row) emits tokens the target ranks far below its best and fails. The gap is an
explicit, reported input (`--tie-gap` in benchmarks/bench_decoding.py).
"""

from __future__ import annotations

import torch


@torch.inference_mode()
def tie_check(engine, prompt_ids: list[int], output_ids: list[int], gap: float) -> dict:
    """Teacher-forced deficits of `output_ids` after `prompt_ids` under `engine` (one forward).

    Returns {"tie_consistent": every deficit <= gap, "max_deficit": nats, "non_argmax": how many
    tokens are not the argmax, "first_violation": index of the first token past the gap or None}.
    The engine's cache is reset before and after."""
    if not output_ids:
        return {"tie_consistent": True, "max_deficit": 0.0, "non_argmax": 0, "first_violation": None}
    engine.reset()
    ids = list(prompt_ids) + list(output_ids[:-1])
    logits = engine.forward(ids)[len(prompt_ids) - 1:]  # row i predicts output token i
    engine.reset()
    lp = torch.log_softmax(logits.float(), -1)
    tok = torch.tensor(output_ids, device=lp.device)
    deficit = lp.max(-1).values - lp.gather(-1, tok[:, None])[:, 0]
    over = (deficit > gap).nonzero()
    return {"tie_consistent": not len(over), "max_deficit": float(deficit.max()),
            "non_argmax": int((lp.argmax(-1) != tok).sum()),
            "first_violation": int(over[0, 0]) if len(over) else None}
