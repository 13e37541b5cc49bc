"""A static-cache engine: preallocated, position-addressed KV buffers and a forward of our own.

`model.engine=static` (llama / qwen2 layouts, full attention). Same protocol and the same weights
as `HFEngine`; what differs is the single-sequence path every strategy runs on:

- KV lives in one preallocated buffer per layer, [1, kv_heads, max_len, head_dim]; a forward
  writes its n new keys and values into slots length .. length + n - 1 in place (no concatenation,
  no reallocation). `rollback(n)` only moves the length back (the slots are overwritten later),
  `keep()` copies the kept tree slots down in place.
- q / k / v and gate / up are one matmul each (`_fuse`: the model's parameters become row views of
  the fused blocks, nothing is held twice); short blocks' grouped-query attention is packed
  (PACK_MAX_QUERIES below).
- The decoder is driven directly, layer by layer, with the model's own weight tensors (F.linear,
  an inline RMSNorm computed as transformers does, the model's rotary module for cos / sin, and
  PyTorch's SDPA over the first length + n slots): no mask builder, no cache objects, no output
  dataclasses, no module hooks on the hot path.
- `compile: true` wraps the per-layer stack in `torch.compile(dynamic=True)`; the first calls pay
  the compilation (benchmarks/bench_decoding.py's `@compiled` methods report it as warm-up time).

Forks (`fork`, `score_suffixes`: the batched test-time search paths) run on the same decoder
loop over their own [B, kv_heads, capacity, head_dim] buffers (`StaticFork`, grown by doubling),
so B rows append a token without transformers re-concatenating B caches per layer per step. The
prompt's shared prefill and the left-padded one-shot batches (`last_logits_batch`,
`hidden_batch`) stay transformers' forward on throwaway caches.
tests/test_static_engine.py checks logits, hidden states, trees, keeps, rollbacks and early exit
against HFEngine, and every lossless strategy token-identical to greedy on this engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from harness.engines.hf import EARLY_EXIT_ARCHS, Fork, HFEngine, tree_allowed


class _Slots:
    """The preallocated buffers of one layer (named like a transformers cache layer, so memory
    accounting that reads `cache.layers[i].keys / .values` sees the whole preallocation)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values


class _StaticKV:
    def __init__(self, layers: list[_Slots]):
        self.layers = layers


# Grouped-query attention for short blocks (decode steps, drafts, trees, forks) runs as G * n queries
# per kv head (transformers' `pack_gqa` for one query, generalised): PyTorch's CPU SDPA with
# enable_gqa costs 3-10x the packed form for ONE query in bf16 here (fp32: 1-2x; isolated timings on
# Qwen / SmolLM2 head shapes, up to ~2 ms per layer at batch 8); long blocks (prefill) keep enable_gqa.
PACK_MAX_QUERIES = 16


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' Llama / Qwen2 RMSNorm, op for op (float32 statistics, cast, then the weight)."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


@torch.no_grad()
def _fuse(projs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [sum(out), in] weight (and bias) for linear layers that read the same input (q / k / v;
    gate / up): one matmul per group instead of one per projection (3 -> 1 and 2 -> 1 per layer:
    fewer calls, one pass over the input). The model's own parameters become row views of the
    fused tensor, so no weight is held twice and the default engine, `generate()` and anything that
    updates the weights in place see the same storage. Row blocks of one matmul equal the separate
    matmuls (tests/test_static_engine.py compares the logits with HFEngine's)."""
    ws = [p.weight for p in projs]
    biases = [p.bias for p in projs]
    if len({(w.dtype, w.device, w.shape[1]) for w in ws}) != 1 or len({b is None for b in biases}) != 1:
        raise ValueError("engine=static: projections to fuse differ in dtype, device, input size or bias")
    parts = [ws] + ([] if biases[0] is None else [biases])
    fused = []
    for group in parts:
        storage = group[0].untyped_storage().data_ptr()
        adjacent = all(t.is_contiguous() and t.untyped_storage().data_ptr() == storage for t in group) and all(
            b.data_ptr() == a.data_ptr() + a.numel() * a.element_size() for a, b in zip(group, group[1:]))
        if adjacent:  # already fused (a second engine over the same model): a view over the whole block
            cat = torch.as_strided(group[0], (sum(t.shape[0] for t in group), *group[0].shape[1:]),
                                   group[0].stride())
        else:
            cat = torch.cat([t.detach() for t in group], dim=0)
            start = 0
            for t in group:
                rows = t.shape[0]
                t.data = cat[start:start + rows]  # the module's parameter becomes a view of the fused block
                start += rows
        fused.append(cat)
    return fused[0], (fused[1] if len(fused) > 1 else None)


def unsupported(config) -> str | None:
    """Why engine=static cannot drive a model with this config (None: it can)."""
    kind = getattr(config, "model_type", "?")
    if kind not in EARLY_EXIT_ARCHS or any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return (f"engine=static drives {' / '.join(EARLY_EXIT_ARCHS)} layouts with full attention only "
                f"(this is {kind}); use engine=hf")
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
        return f"engine=static implements the silu MLP, not {config.hidden_act}"
    return None


class StaticEngine(HFEngine):
    """HFEngine's protocol over preallocated, position-addressed KV buffers (see the module doc)."""

    def __init__(self, model, tokenizer, name: str, dtype: str, max_len: int = 4096, compile: bool = False):
        cfg = model.config
        if why := unsupported(cfg):
            raise ValueError(f"model '{name}': {why}")
        if int(max_len) < 1:
            raise ValueError(f"model '{name}': max_len must be >= 1, got {max_len}")
        self.max_len = int(max_len)
        self.compiled = bool(compile)
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads)
        self._kv = None
        super().__init__(model, tokenizer, name, dtype)  # calls reset(): the buffers are allocated
        base = model.model
        self.eps = float(cfg.rms_norm_eps)
        self.scaling = self.head_dim ** -0.5
        self._w = []
        for layer in base.layers:
            a, m = layer.self_attn, layer.mlp
            wqkv, bqkv = _fuse((a.q_proj, a.k_proj, a.v_proj))
            wgu, bgu = _fuse((m.gate_proj, m.up_proj))
            self._w.append((layer.input_layernorm.weight, wqkv, bqkv, a.o_proj.weight, a.o_proj.bias,
                            layer.post_attention_layernorm.weight, wgu, bgu, m.down_proj.weight, m.down_proj.bias))
        self._split = (self.n_heads * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim)
        self._layers_fn = torch.compile(self._layers, dynamic=True) if self.compiled else self._layers

    # ------------------------------------------------------------------ state
    def new_kv(self, batch: int = 1, capacity: int | None = None, zero: bool = True) -> _StaticKV:
        """Per-layer [batch, kv_heads, capacity, head_dim] key and value buffers. zero=False
        leaves them uninitialised (a fork's: every slot is written before any query reads it),
        which spares zeroing and touching the pages of slots never filled."""
        shape = (batch, self.n_kv, self.max_len if capacity is None else capacity, self.head_dim)
        kw = dict(dtype=self.model.dtype, device=self.device)
        new = torch.zeros if zero else torch.empty
        return _StaticKV([_Slots(new(shape, **kw), new(shape, **kw))
                          for _ in range(int(self.model.config.num_hidden_layers))])

    def reset(self) -> None:
        if self._kv is None:
            self._kv = self.new_kv()
        self.cache = self._kv  # memory accounting reads engine.cache.layers
        self._len = [0] * int(self.model.config.num_hidden_layers)
        self.hidden = {}
        self._prefix = None

    @property
    def length(self) -> int:
        return self._len[0]

    def rollback(self, n: int) -> None:
        if n < 0 or n > self.length:
            raise ValueError(f"rollback({n}) with {self.length} cached positions")
        self._len = [max(0, x - n) for x in self._len]

    def keep(self, indices: Sequence[int], n: int) -> None:
        base = self.length - n
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.device) + base
        m = len(idx)
        for s in self._kv.layers:
            s.keys[:, :, base:base + m] = s.keys.index_select(2, idx)
            s.values[:, :, base:base + m] = s.values.index_select(2, idx)
        self._len = [base + m] * len(self._len)

    def layer_length(self, layer: int) -> int:
        return self._len[layer]

    def crop_to(self, length: int) -> None:
        self._len = [min(x, length) for x in self._len]

    # ------------------------------------------------------------------ compute
    def _layers(self, h, cos, sin, mask, start: int, stop: int, past: int, want: tuple, kv: _StaticKV):
        """Decoder layers [start, stop) on h [B, n, d]; writes KV at slots past .. past + n - 1 of
        `kv` (B rows). Returns the output and the hidden states after the layers listed in `want`."""
        B, n = h.shape[0], h.shape[1]
        H, K, D = self.n_heads, self.n_kv, self.head_dim
        G = H // K
        packed = G > 1 and n <= PACK_MAX_QUERIES
        if packed and mask is not None and n > 1:  # query row g * n + i of a kv head is query i of its g-th head
            mask = mask.repeat(1, 1, G, 1)
        kept = {}
        for i in range(start, stop):
            ln1, wqkv, bqkv, wo, bo, ln2, wgu, bgu, wd, bd = self._w[i]
            x = _rms(h, ln1, self.eps)
            q, k, v = F.linear(x, wqkv, bqkv).split(self._split, dim=-1)
            q = q.view(B, n, H, D).transpose(1, 2)
            k = k.view(B, n, K, D).transpose(1, 2)
            v = v.view(B, n, K, D).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            slots = kv.layers[i]
            slots.keys[:, :, past:past + n] = k
            slots.values[:, :, past:past + n] = v
            keys, values = slots.keys[:, :, :past + n], slots.values[:, :, :past + n]
            if packed:  # the G query heads of each kv head as G * n queries of one head (no GQA expansion)
                o = F.scaled_dot_product_attention(q.reshape(B, K, G * n, D), keys, values, attn_mask=mask,
                                                   scale=self.scaling).view(B, H, n, D)
            else:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling,
                                                   enable_gqa=K != H)
            h = h + F.linear(o.transpose(1, 2).reshape(B, n, H * D), wo, bo)
            x = _rms(h, ln2, self.eps)
            g, u = F.linear(x, wgu, bgu).chunk(2, dim=-1)
            h = h + F.linear(F.silu(g) * u, wd, bd)
            if i + 1 in want:
                kept[i + 1] = h
        return h, kept

    def _run(self, h, start: int, stop: int, positions: torch.Tensor, allowed: torch.Tensor | None,
             want: tuple = ()):
        """Shared by forward and forward_layers: positions [n] (CPU), allowed bool [n, past + n]
        or None (a chain: causal over the new slots, everything cached before)."""
        n = h.shape[1]
        past = self._len[start]
        if past + n > self.max_len:
            raise ValueError(f"model '{self.name}': {past + n} positions exceed the static engine's max_len "
                             f"{self.max_len} (set model.max_len)")
        pos = positions.to(self.device).reshape(1, -1)
        cos, sin = self.model.model.rotary_emb(h, position_ids=pos)
        cos, sin = cos[:, None].to(h.dtype), sin[:, None].to(h.dtype)
        if allowed is None and n > 1:
            allowed = torch.ones(n, past + n, dtype=torch.bool)
            allowed[:, past:] = torch.tril(allowed[:, past:])
        mask = None if allowed is None else allowed.to(self.device).reshape(1, 1, n, past + n)
        self._timing._enter(None, None)
        try:
            out, kept = self._layers_fn(h, cos, sin, mask, start, stop, past, tuple(want), self._kv)
        finally:
            self._timing._leave(None, None, None)
        for i in range(start, stop):
            self._len[i] = past + n
        return out, kept

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        self._timing._enter(None, None)
        try:
            h = _rms(h, self.model.model.norm.weight, self.eps)
            if self._head is None:
                out = F.linear(h, self.model.lm_head.weight)
        finally:
            self._timing._leave(None, None, None)
        if self._head is not None:  # restrict_head (drafting): the restricted rows (timed there), -inf elsewhere
            return torch.stack([self._restricted_logits(r) for r in h])
        return self._out(out)  # outside the model's time, as HFEngine's copy of transformers' logits

    @torch.inference_mode()
    def forward(self, ids: Sequence[int] | torch.Tensor | None = None, *, tree: torch.Tensor | None = None,
                depths: torch.Tensor | None = None, hidden_layers: Sequence[int] = (),
                last_only: bool = False, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """As HFEngine.forward (same arguments, same float32 logits on `logits_device`)."""
        if any(self._len[i] != self._len[0] for i in range(1, len(self._len))):
            raise ValueError("layers hold different cached lengths (call crop_to after forward_layers)")
        # one timed model call from the embedding to the head's matmul (on a GPU: one pair of
        # synchronisations per forward, not one per part); the logits' copy stays outside
        self._timing._enter(None, None)
        try:
            if embeds is not None:
                h = embeds.reshape(1, -1, embeds.shape[-1]).to(self.device, self.model.dtype)
            else:
                h = self.model.model.embed_tokens(torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(1, -1))
            n, past = h.shape[1], self.length
            if self.bidirectional_prompt and past == 0 and n > 1 and tree is None and depths is None:
                tree = torch.ones(n, n, dtype=torch.bool)
            d = torch.arange(n) if depths is None else torch.as_tensor(depths).reshape(-1).cpu()
            allowed = tree_allowed(tree, past) if tree is not None else None
            L = self.num_layers
            want = tuple(i for i in hidden_layers if 0 < i < L)
            out, kept = self._run(h, 0, L, past + d, allowed, want)
            self.forwards += 1
            self.tokens_fed += n
            if hidden_layers:
                final = None
                self.hidden = {}
                for i in hidden_layers:
                    if i == 0:
                        self.hidden[i] = h[0]
                    elif i == L:
                        final = _rms(out, self.model.model.norm.weight, self.eps) if final is None else final
                        self.hidden[i] = final[0]
                    else:
                        self.hidden[i] = kept[i][0]
            x = out[:, -1:] if last_only else out
            raw = None if self._head is not None else \
                F.linear(_rms(x, self.model.model.norm.weight, self.eps), self.model.lm_head.weight)
        finally:
            self._timing._leave(None, None, None)
        # outside the model's time, as HFEngine's copy of transformers' logits; a restricted head
        # (drafting) computes its own rows (timed there) and fills -inf elsewhere
        logits = (self._out(raw) if raw is not None else self._logits(x))[0]
        return logits[-1] if last_only else logits

    @torch.inference_mode()
    def forward_layers(self, x, start: int, stop: int, *, logits: bool = True, last_only: bool = False):
        """As HFEngine.forward_layers: layers [start, stop) only, their own slot counts."""
        h = self._layer_input(x, start, stop)
        past = self._len[start]
        if any(self._len[i] != past for i in range(start + 1, stop)):
            raise ValueError(f"layers {start}..{stop - 1} hold different cached lengths")
        out, _ = self._run(h, start, stop, past + torch.arange(h.shape[1]), None)
        out = out[0]
        return out, (self.head(out[-1] if last_only else out) if logits else None)


class StaticFork(Fork):
    """`Fork` (same slots, masks and positions: harness/engines/hf.py) over preallocated
    [B, kv_heads, capacity, head_dim] buffers driven by the static engine's decoder loop: a step
    writes one slot per row in place instead of concatenating every layer's B-row cache."""

    def _init_cache(self, prompt_cache, B: int, P: int) -> None:
        self.kv = self.engine.new_kv(batch=B, capacity=max(2 * P, P + 256), zero=False)
        for i, layer in enumerate(prompt_cache.layers):
            self.kv.layers[i].keys[:, :, :P] = layer.keys
            self.kv.layers[i].values[:, :, :P] = layer.values
        self.cache = self.kv  # memory accounting reads .layers
        self.filled = P

    def _grow(self, need: int) -> None:
        cap = self.kv.layers[0].keys.shape[2]
        if need <= cap:
            return
        new = self.engine.new_kv(batch=self.kv.layers[0].keys.shape[0], capacity=max(need, 2 * cap), zero=False)
        for old, nw in zip(self.kv.layers, new.layers):
            nw.keys[:, :, :self.filled] = old.keys[:, :, :self.filled]
            nw.values[:, :, :self.filled] = old.values[:, :, :self.filled]
        self.kv = self.cache = new

    def _select_cache(self, idx: torch.Tensor) -> None:
        """Rows `idx` into new buffers of the same capacity; only the filled slots are copied."""
        idx = idx.to(self.engine.device)
        new = self.engine.new_kv(batch=len(idx), capacity=self.kv.layers[0].keys.shape[2], zero=False)
        S = self.filled
        for old, nw in zip(self.kv.layers, new.layers):
            torch.index_select(old.keys[:, :, :S], 0, idx, out=nw.keys[:, :, :S])
            torch.index_select(old.values[:, :, :S], 0, idx, out=nw.values[:, :, :S])
        self.kv = self.cache = new

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, q_allowed: torch.Tensor) -> torch.Tensor:
        e = self.engine
        B, M = ids.shape
        S = self.filled
        self._grow(S + M)
        self.slot_pos = torch.cat([self.slot_pos, pos], dim=1)
        with torch.inference_mode():
            e._timing._enter(None, None)  # the embedding and rotary tables are the model's work too
            try:
                h = e.model.model.embed_tokens(ids.to(e.device))
                cos, sin = e.model.model.rotary_emb(h, position_ids=pos.to(e.device))
                cos, sin = cos[:, None].to(h.dtype), sin[:, None].to(h.dtype)
                mask = q_allowed.to(e.device)[:, None]  # [B, 1, M, S + M]
                out, _ = e._layers_fn(h, cos, sin, mask, 0, e.num_layers, S, (), self.kv)
                logits = F.linear(_rms(out, e.model.model.norm.weight, e.eps), e.model.lm_head.weight)
            finally:
                e._timing._leave(None, None, None)
            logits = e._out(logits)  # outside the model's time, as the default fork's
        self.filled = S + M
        e.forwards += 1
        return logits


StaticEngine.fork_class = StaticFork
