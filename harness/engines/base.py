"""The Engine protocol: what every strategy may ask of a model, and nothing more.

An engine holds weights and one KV state (batch size 1) and does no sampling or search.
Strategies are typed against `Engine`; none touches a tokenizer or a model config. The
autoregressive engine is `harness.engines.hf.HFEngine`; other engines (a masked-diffusion
engine, a static-cache engine) implement the same protocol and declare what they support in
`capabilities`, so the runner refuses a strategy that needs more before any example runs.

Capabilities (strings a strategy lists in `needs`):
    rollback       drop the last n cached positions (speculative methods)
    tree_mask      feed a token tree with an ancestor mask and depth positions
    hidden_states  return hidden states of chosen layers with the logits
    early_exit     run a prefix of the decoder layers (`forward_layers`, `crop_to`, `head`)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Engine(Protocol):
    # ------------------------------------------------------------------ identity
    name: str                      # model name (rows, errors)
    vocab_size: int                # logits per position
    num_layers: int                # decoder layers
    hidden_size: int               # width of a hidden state
    eos_ids: frozenset             # ids that end a generation
    capabilities: frozenset        # see the module docstring
    device: object
    forwards: int                  # forwards so far (cumulative; a DecodingState reads differences)
    tokens_fed: int                # positions processed so far (cumulative)
    hidden: dict                   # hidden states of the last forward that asked for them

    def vocabulary_fingerprint(self) -> str: ...   # stable identity of the token <-> id map
    def special_id(self, kind: str) -> int | None: ...  # "eos" | "pad" | "unk" | "bos"

    # ------------------------------------------------------------------ text
    def render(self, messages: list[dict] | str) -> list[int]: ...  # chat prompt -> ids
    def encode(self, text: str, special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
    def token_text(self, token: int) -> str: ...

    # ------------------------------------------------------------------ state
    def reset(self) -> None: ...
    @property
    def length(self) -> int: ...
    def counters(self) -> tuple[int, int]: ...
    def rollback(self, n: int) -> None: ...
    def truncate_to(self, length: int) -> None: ...
    def keep(self, indices: Sequence[int], n: int) -> None: ...

    # ------------------------------------------------------------------ compute
    def forward(self, ids=None, *, tree: torch.Tensor | None = None, depths: torch.Tensor | None = None,
                hidden_layers: Sequence[int] = (), last_only: bool = False,
                embeds: torch.Tensor | None = None) -> torch.Tensor: ...
    def embed(self, ids) -> torch.Tensor: ...
    def head(self, h: torch.Tensor) -> torch.Tensor: ...
    def forward_layers(self, x, start: int, stop: int, *, logits: bool = True, last_only: bool = False): ...
    def crop_to(self, length: int) -> None: ...
    def last_logits_batch(self, seqs: Sequence[Sequence[int]], count: bool = True) -> torch.Tensor: ...
    def fork(self, prompt_ids: Sequence[int], suffixes: Sequence[Sequence[int]]): ...
    def score_suffixes(self, prompt_ids: Sequence[int], suffixes: Sequence[Sequence[int]],
                       extra_ids: Sequence[int] = (), batch: int = 32) -> list: ...
