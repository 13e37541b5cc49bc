"""The engine seam: weights + KV state, no sampling, no search.

Strategies talk to the model only through `Engine`:

    logits = engine.forward(ids)                    # feed n new tokens, logits for each  [n, V]
    logits = engine.forward(ids, tree=anc, depths=d)  # a token tree: 4D mask + positions = depth
    engine.rollback(n)                              # forget the last n cached positions
    engine.keep(idx, n)                             # after a tree: keep these of the last n slots
    engine.hidden[layer]                            # hidden states of the last forward (if asked)

Writes go to absolute positions (`engine.length` is the next one), so a rejected draft costs
a `rollback`, never a recomputation. The engine counts its forwards and the tokens it was fed;
strategies read those counters into their Trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class HFEngine:
    """A transformers causal LM with a DynamicCache, batch size 1."""

    def __init__(self, model, tokenizer, name: str, dtype: str):
        from transformers import DynamicCache

        self._cache_cls = DynamicCache
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.num_layers = int(model.config.num_hidden_layers)
        types = getattr(model.config, "layer_types", None) or []
        sliding = any(t != "full_attention" for t in types)
        # Capabilities are declared, not discovered by failure: strategies list what they need.
        self.capabilities = frozenset({"hidden_states"} | (set() if sliding else {"rollback", "tree_mask"}))
        eos = set()
        for src in (getattr(tokenizer, "eos_token_id", None), getattr(model.generation_config, "eos_token_id", None)
                    if getattr(model, "generation_config", None) is not None else None):
            if isinstance(src, int):
                eos.add(src)
            elif isinstance(src, (list, tuple)):
                eos.update(int(x) for x in src)
        self.eos_ids = frozenset(eos)
        self.hidden: dict[int, torch.Tensor] = {}
        self.forwards = 0
        self.tokens_fed = 0
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Empty the KV cache (start of an example). Counters are not touched."""
        self.cache = self._cache_cls(config=self.model.config)
        self.hidden = {}

    @property
    def length(self) -> int:
        """Number of cached positions = absolute position of the next token fed."""
        return self.cache.get_seq_length()

    def counters(self) -> tuple[int, int]:
        return self.forwards, self.tokens_fed

    # ------------------------------------------------------------------ compute
    @torch.inference_mode()
    def forward(self, ids: Sequence[int] | torch.Tensor, *, tree: torch.Tensor | None = None,
                depths: torch.Tensor | None = None, hidden_layers: Sequence[int] = (),
                last_only: bool = False) -> torch.Tensor:
        """Feed `ids` after the cached prefix; return float32 CPU logits [n, V] (or [V] if last_only).

        Logits come back on the CPU whatever the device, so sampling with the runner's CPU
        generator is identical on every device (the copy is one [n, V] row block per forward).

        tree: optional bool [n, n], tree[i, j] = token i may attend to new token j (ancestors
              and itself); every new token attends to the whole cached prefix. Or bool
              [n, length + n] over cached AND new positions, for trees grown across forwards.
        depths: [n] depth of each new token below the prefix (position = length + depth);
              defaults to 0..n-1 (a chain).
        hidden_layers: indices into the model's hidden states (0 = embeddings, L = last layer,
              after the final norm) to keep in `self.hidden` as [n, d].
        """
        ids_t = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(1, -1)
        n = ids_t.shape[1]
        past = self.length
        kw = {}
        if tree is not None or depths is not None:
            d = torch.arange(n) if depths is None else torch.as_tensor(depths).reshape(-1).cpu()
            kw["position_ids"] = (past + d).to(self.device).reshape(1, -1)
        if tree is not None:
            kw["attention_mask"] = tree_mask_4d(tree, past, self.model.dtype, self.device)
        if last_only and not hidden_layers:
            kw["logits_to_keep"] = 1
        out = self.model(input_ids=ids_t, cache=self.cache, use_cache=True,
                         output_hidden_states=bool(hidden_layers), **kw)
        self.forwards += 1
        self.tokens_fed += n
        if hidden_layers:
            self.hidden = {i: out.hidden_states[i][0] for i in hidden_layers}
        logits = out.logits[0, -1:] if last_only else out.logits[0]
        logits = logits.float().cpu()
        return logits[-1] if last_only else logits

    def rollback(self, n: int) -> None:
        """Forget the last n cached positions (n = 0 is a no-op)."""
        if n < 0 or n > self.length:
            raise ValueError(f"rollback({n}) with {self.length} cached positions")
        if n:
            self.cache.crop(-n)

    def truncate_to(self, length: int) -> None:
        self.rollback(self.length - length)

    def keep(self, indices: Sequence[int], n: int) -> None:
        """Of the last n cached slots (a tree just fed), keep `indices` in that order; drop the rest."""
        base = self.length - n
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.device) + base
        for layer in self.cache.layers:
            layer.keys = torch.cat([layer.keys[:, :, :base], layer.keys.index_select(2, idx)], dim=2)
            layer.values = torch.cat([layer.values[:, :, :base], layer.values.index_select(2, idx)], dim=2)

    # ------------------------------------------------------------------ text
    def render(self, messages: list[dict] | str) -> list[int]:
        """Prompt token ids: the model's chat template when it has one, plain text otherwise."""
        tok = self.tokenizer
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc
            return [int(i) for i in ids]
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        return list(tok.encode(text, add_special_tokens=True))  # the tokenizer knows its BOS

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def vocabulary_signature(self):
        """Identity of the token<->id map, to refuse a draft whose vocabulary differs."""
        tok = self.tokenizer
        if hasattr(tok, "get_vocab"):
            vocab = tok.get_vocab()
            return len(vocab), hash(frozenset(vocab.items()))
        return ("bytes", len(tok))


def tree_mask_4d(tree: torch.Tensor, past: int, dtype: torch.dtype, device) -> torch.Tensor:
    """[n, n] (or [n, past + n]) bool ancestor matrix -> additive mask [1, 1, n, past + n]."""
    tree = torch.as_tensor(tree, dtype=torch.bool).cpu()
    n = tree.shape[0]
    allowed = tree if tree.shape[1] == past + n else torch.cat([torch.ones(n, past, dtype=torch.bool), tree], dim=1)
    mask = torch.zeros(n, past + n, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.to(device).reshape(1, 1, n, past + n)
