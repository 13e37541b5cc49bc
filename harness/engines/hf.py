"""The autoregressive engine: a transformers causal LM + a DynamicCache (the `Engine` protocol
of harness/engines/base.py). Weights + KV state, no sampling, no search.

Strategies talk to the model only through the protocol:

    logits = engine.forward(ids)                    # feed n new tokens, logits for each  [n, V]
    logits = engine.forward(ids, tree=anc, depths=d)  # a token tree: 4D mask + positions = depth
    engine.rollback(n)                              # forget the last n cached positions
    engine.keep(idx, n)                             # after a tree: keep these of the last n slots
    engine.hidden[layer]                            # hidden states of the last forward (if asked)
    h, logits = engine.forward_layers(ids, 0, l)    # early exit: layers [0, l) + norm + head (own KV)
    engine.crop_to(n)                               # cut every layer's cache back to n positions
    logits = engine.forward(embeds=v)               # feed input vectors [n, d] (v from engine.embed)

Writes go to absolute positions (`engine.length` is the next one), so a rejected draft costs
a `rollback`, never a recomputation. The engine counts its forwards and the tokens it was fed;
strategies read those counters into their Trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.engines.text import TokenizerText, eos_set, vocabulary_fingerprint  # noqa: F401 (re-exported)


# architectures whose decoder layers `forward_layers` drives directly (embed -> layers -> norm -> head)
EARLY_EXIT_ARCHS = ("llama", "qwen2")


def sliding_window_of(config) -> int | None:
    """The window of a model's sliding-window layers (a query at position p sees keys at
    positions > p - window), or None when every layer attends fully."""
    types = getattr(config, "layer_types", None) or []
    return int(config.sliding_window) if "sliding_attention" in types and getattr(config, "sliding_window", None) \
        else None


def capabilities_from_config(config) -> frozenset:
    """What an HFEngine over a model with this config supports. Sliding-window layers get rollback
    and tree masks too: the engine keeps every position of them (see HFEngine) and applies the
    window in the mask; layer kinds it does not know (chunked, linear attention) get neither.
    Early exit on the known full-attention layouts only."""
    types = getattr(config, "layer_types", None) or []
    unknown = any(t not in ("full_attention", "sliding_attention") for t in types)
    full_only = all(t == "full_attention" for t in types)
    return frozenset({"hidden_states"} | (set() if unknown else {"rollback", "tree_mask"})
                     | ({"early_exit"} if full_only and getattr(config, "model_type", "") in EARLY_EXIT_ARCHS
                        else set()))


def left_pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) [B, M] of independent sequences, left-padded."""
    B, M = len(seqs), max(len(s) for s in seqs)
    ids = torch.zeros(B, M, dtype=torch.long)
    mask = torch.zeros(B, M, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, M - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, M - len(s):] = 1
    return ids, mask, (mask.cumsum(1) - 1).clamp_min(0)


class ModelTimer:
    """Accumulates the wall time spent inside a transformers model into `engine.model_s`.

    Forward hooks on the causal LM, its base model, every decoder layer, the final norm and the LM
    head, with a depth guard so nested calls count once: every path into the weights (a cached
    forward, a fork's batched step, a judge's padded batch, a value head's hidden states, a
    layer-by-layer early-exit forward, `head()`) is timed, whoever calls it. The rest of an
    example's wall time is what the harness and the strategy spend outside the model."""

    def __init__(self, engine, model):
        import time

        self.engine, self.depth, self.t0, self.clock = engine, 0, 0.0, time.perf_counter
        # On a GPU the model's kernels run asynchronously: without a synchronisation at the edges
        # their time would be charged to whatever waits for them next (the logits' copy, a
        # sampler's .item()), i.e. to the harness. So the device is synchronised when the
        # outermost model call starts (work queued before it is not the model's) and ends.
        dev = next(model.parameters()).device
        self.sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None
        mods = [model, getattr(model, "model", None), getattr(model, "lm_head", None)]
        base = getattr(model, "model", None)
        mods += list(getattr(base, "layers", []) or []) + [getattr(base, "norm", None)]
        self.handles = []
        for m in mods:
            if isinstance(m, torch.nn.Module):
                self.handles.append(m.register_forward_pre_hook(self._enter))
                self.handles.append(m.register_forward_hook(self._leave, always_call=True))  # also when a forward raises

    def remove(self) -> None:
        """Take the hooks off the model (a second engine over the same weights that times its own
        calls, e.g. engine=static in a benchmark, so the first engine's calls are not hooked twice)."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def _enter(self, module, args):
        if self.depth == 0:
            if self.sync is not None:
                self.sync()
            self.t0 = self.clock()
        self.depth += 1

    def _leave(self, module, args, output):
        self.depth -= 1
        if self.depth == 0:
            if self.sync is not None:
                self.sync()
            self.engine.model_s += self.clock() - self.t0


class HFEngine(TokenizerText):
    """A transformers causal LM with a DynamicCache, batch size 1.

    Sliding-window models (Gemma-3): transformers' sliding cache layers keep only the last
    window - 1 positions, so a rollback or a tree would need positions already dropped. This
    engine instead keeps EVERY position in every layer (a cache of full layers) and applies the
    window in the attention mask: by transformers' own mask builder for a plain chain, and by
    `_masks` (ancestors AND position distance < window, from each slot's recorded position) for
    trees, depth positions and slots left by a tree grown across forwards. Exact at any length;
    the price is the sliding layers' KV growing with the sequence (and attention over masked
    slots past the window), the same for every strategy on the engine."""

    def __init__(self, model, tokenizer, name: str, dtype: str):
        from transformers import DynamicCache

        self._cache_cls = DynamicCache
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.dtype = dtype
        self.device = next(model.parameters()).device
        # where forward / fork logits come back: the CPU (default: one sampler, one CPU generator,
        # identical rows on every device) or, with `logits_on_device(True)`, the model's device
        # (a GPU keeps them there; sampling then needs a generator on that device)
        self.logits_device = torch.device("cpu")
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.num_layers = int(model.config.num_hidden_layers)
        self.hidden_size = int(model.config.hidden_size)
        # Capabilities are declared, not discovered by failure: strategies list what they need.
        self.capabilities = capabilities_from_config(model.config)
        self.window = sliding_window_of(model.config)
        self._layer_types = sorted(set(getattr(model.config, "layer_types", None) or ["full_attention"]))
        gen = getattr(model, "generation_config", None)
        self.eos_ids = eos_set(getattr(tokenizer, "eos_token_id", None),
                               getattr(gen, "eos_token_id", None) if gen is not None else None)
        self.hidden: dict[int, torch.Tensor] = {}
        # Huang et al.'s bi-attention variant (their bi_models/*_inf.py): the prefill forward of the
        # prompt is fully bidirectional (every prompt token sees every other), later forwards are
        # causal over everything before them. Set by ModelSpec(bidirectional_prompt=True).
        self.bidirectional_prompt = False
        self._head = None  # restrict_head(): (row ids [cap] CPU, head rows [cap, d] on the device, used rows)
        self.forwards = 0
        self.tokens_fed = 0
        self.model_s = 0.0  # seconds spent inside the model's modules (every caller: forks, judges, heads)
        self._timing = ModelTimer(self, model)
        self.reset()

    def logits_on_device(self, on: bool = True) -> None:
        """Keep `forward`'s and forks' float32 logits on the model's device instead of copying
        them to the CPU (`model.logits_on_device`). Strategies keep their tensors on the logits'
        device (`Strategy.device_logits`: tests/test_device_logits.py runs each under a fake
        CUDA device); their generator lives on `self.device` (the runner makes it so). The
        early-exit `head()` follows; the batches' outputs (`last_logits_batch`, `hidden_batch`,
        `score_suffixes`: judges and value heads) stay on the CPU."""
        self.logits_device = self.device if on else torch.device("cpu")
        self._prefix = None  # a fork's cached prompt logits sit where the logits went before

    def _out(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's logits as the engine returns them: float32 on `logits_device`."""
        return logits.float().to(self.logits_device)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Empty the KV cache (start of an example). Counters are not touched."""
        self.cache = self.new_cache()
        self._pos = torch.zeros(0, dtype=torch.long)  # position of each cached slot (sliding-window models)
        self.hidden = {}
        self._prefix = None  # (prompt ids, prompt KV, last logits) shared by fork()

    def new_cache(self):
        """An empty cache: transformers' own layer kinds, or only full layers for a sliding-window
        model (every position kept, so rollback and trees work; the window is in the mask)."""
        return self._cache_cls() if self.window else self._cache_cls(config=self.model.config)

    def _masks(self, allowed: torch.Tensor, qpos: torch.Tensor, kpos: torch.Tensor):
        """Additive masks from bool `allowed` [..., n, S] for each layer kind: full layers see the
        allowed slots; sliding layers also need qpos - kpos < window. qpos [..., n], kpos [..., S]."""
        full = additive_mask(allowed, self.model.dtype, self.device)
        if not self.window:
            return full
        near = (qpos[..., :, None] - kpos[..., None, :]) < self.window
        sliding = additive_mask(allowed & near, self.model.dtype, self.device)
        return {t: (sliding if t == "sliding_attention" else full) for t in self._layer_types}

    @property
    def length(self) -> int:
        """Number of cached positions = absolute position of the next token fed."""
        return self.cache.get_seq_length()

    def counters(self) -> tuple[int, int]:
        return self.forwards, self.tokens_fed

    # ------------------------------------------------------------------ compute
    @torch.inference_mode()
    def forward(self, ids: Sequence[int] | torch.Tensor | None = None, *, tree: torch.Tensor | None = None,
                depths: torch.Tensor | None = None, hidden_layers: Sequence[int] = (),
                last_only: bool = False, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Feed `ids` after the cached prefix; return float32 logits [n, V] (or [V] if last_only).

        Logits come back on the CPU whatever the device, so sampling with the runner's CPU
        generator is identical on every device (the copy is one [n, V] row block per forward);
        after `logits_on_device()` they stay on the model's device.

        tree: optional bool [n, n], tree[i, j] = token i may attend to new token j (ancestors
              and itself); every new token attends to the whole cached prefix. Or bool
              [n, length + n] over cached AND new positions, for trees grown across forwards.
        depths: [n] depth of each new token below the prefix (position = length + depth);
              defaults to 0..n-1 (a chain).
        hidden_layers: indices into the model's hidden states (0 = embeddings, L = last layer,
              after the final norm) to keep in `self.hidden` as [n, d].
        embeds: float [n, d] input vectors fed INSTEAD of ids (e.g. a weighted sum of `embed()`
              rows: superposed decoding); same cache, positions, masks and counters.
        """
        if embeds is not None:
            x = {"inputs_embeds": embeds.reshape(1, -1, embeds.shape[-1]).to(self.device, self.model.dtype)}
        else:
            x = {"input_ids": torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(1, -1)}
        n = next(iter(x.values())).shape[1]
        past = self.length
        kw = {}
        if self.bidirectional_prompt and past == 0 and n > 1 and tree is None and depths is None:
            tree = torch.ones(n, n, dtype=torch.bool)  # the prompt's prefill attends both ways (below)
        qpos = past + (torch.arange(n) if depths is None else torch.as_tensor(depths).reshape(-1).cpu())
        kpos = torch.cat([self._pos, qpos]) if self.window else None  # every slot's position (sliding windows)
        # explicit positions and masks for trees and depths; on a sliding-window model also for a
        # chain after slots whose positions are not their indices (transformers' mask assumes they are)
        if tree is not None or depths is not None or (self.window and not torch.equal(kpos, torch.arange(past + n))):
            kw["position_ids"] = qpos.to(self.device).reshape(1, -1)
            if tree is not None or self.window:
                chain = torch.tril(torch.ones(n, n, dtype=torch.bool))
                kw["attention_mask"] = self._masks(tree_allowed(tree if tree is not None else chain, past), qpos, kpos)
        if self.window:
            self._pos = kpos
        if self._head is not None:  # a restricted head (drafting): the decoder, then our own head rows
            out = self.model.model(**x, cache=self.cache, use_cache=True, output_hidden_states=bool(hidden_layers), **kw)
            h = out.last_hidden_state[0]
            logits = self._restricted_logits(h[-1:] if last_only else h)
        else:
            if last_only and not hidden_layers:
                kw["logits_to_keep"] = 1
            out = self.model(**x, cache=self.cache, use_cache=True, output_hidden_states=bool(hidden_layers), **kw)
            logits = self._out(out.logits[0, -1:] if last_only else out.logits[0])
        self.forwards += 1
        self.tokens_fed += n
        if hidden_layers:
            self.hidden = {i: out.hidden_states[i][0] for i in hidden_layers}
        return logits[-1] if last_only else logits

    # ------------------------------------------------------------------ restricted head (drafting)
    def restrict_head(self, ids: Sequence[int] | None) -> None:
        """From now on `forward` computes the LM head only for the token ids `ids` and returns -inf
        logits for every other token (same [n, V] shape, so argmax / softmax / sampling work
        unchanged: the others get probability 0). None restores the full head.

        For a DRAFT engine (speculative decoding's `draft_vocab`): the head is a large share of a
        small draft's forward (Qwen2.5-0.5B: 136M of its 494M parameters), and a draft that can
        only propose likely tokens loses little acceptance; the target still verifies every
        token over the full vocabulary, so the method stays lossless. `head()` (early-exit
        heads) and the batched paths keep the full vocabulary."""
        if ids is None:
            self._head = None
            return
        if getattr(self.model.config, "final_logit_softcapping", None) or getattr(self.model.lm_head, "bias", None) is not None:
            raise ValueError(f"model '{self.name}': restrict_head supports a plain linear LM head only")
        rows = torch.as_tensor(sorted({int(i) for i in ids}), dtype=torch.long)
        if len(rows) == 0 or rows[0] < 0 or rows[-1] >= self.vocab_size:
            raise ValueError(f"restrict_head: ids must be non-empty and in 0..{self.vocab_size - 1}")
        cap = len(rows) + max(16, len(rows) // 8)  # room for extend_head without reallocating
        buf = torch.zeros(cap, dtype=torch.long)
        buf[:len(rows)] = rows
        W = self.model.lm_head.weight
        Wb = W.new_zeros(cap, W.shape[1])
        Wb[:len(rows)] = W.index_select(0, rows.to(W.device))
        self._head_has = torch.zeros(self.vocab_size, dtype=torch.bool)  # membership, O(1) per id
        self._head_has[rows] = True
        self._head = [buf, Wb, len(rows)]

    def extend_head(self, ids: Sequence[int]) -> None:
        """Add token ids to a restricted head (no-op without one, or for ids it already has)."""
        if self._head is None:
            return
        buf, Wb, n = self._head
        new = sorted({int(i) for i in ids if not self._head_has[int(i)]})  # called every step: no set of all rows
        if not new:
            return
        if n + len(new) > len(buf):  # grow by doubling
            cap = max(2 * len(buf), n + len(new))
            buf2 = torch.zeros(cap, dtype=torch.long)
            buf2[:n] = buf[:n]
            W2 = Wb.new_zeros(cap, Wb.shape[1])
            W2[:n] = Wb[:n]
            buf, Wb = buf2, W2
        idx = torch.as_tensor(new, dtype=torch.long)
        self._head_has[idx] = True
        buf[n:n + len(new)] = idx
        Wb[n:n + len(new)] = self.model.lm_head.weight.index_select(0, idx.to(Wb.device))
        self._head = [buf, Wb, n + len(new)]

    @property
    def head_rows(self) -> int:
        """Rows of the LM head `forward` computes (the vocabulary, or the restricted count)."""
        return self.vocab_size if self._head is None else self._head[2]

    def _restricted_logits(self, h: torch.Tensor) -> torch.Tensor:
        """float32 CPU [n, V] logits of normed hidden states h [n, d]: the restricted rows, -inf elsewhere."""
        buf, Wb, n = self._head
        self._timing._enter(None, None)  # the head's rows are model weights: model time
        try:
            sub = torch.nn.functional.linear(h, Wb[:n])
        finally:
            self._timing._leave(None, None, None)
        sub = self._out(sub)  # the copy and the -inf fill are the engine's own (outside) time
        out = torch.full((h.shape[0], self.vocab_size), float("-inf"), device=sub.device)
        out[:, buf[:n].to(sub.device)] = sub
        return out

    @torch.inference_mode()
    def embed(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The model's input embeddings of `ids` [n, d] (its own embedding module, so any
        built-in scaling is included), on the device, in the model's dtype; for `forward(embeds=)`."""
        ids_t = torch.as_tensor(ids, dtype=torch.long, device=self.device).reshape(1, -1)
        return self.model.get_input_embeddings()(ids_t)[0]

    def rollback(self, n: int) -> None:
        """Forget the last n cached positions (n = 0 is a no-op)."""
        if n < 0 or n > self.length:
            raise ValueError(f"rollback({n}) with {self.length} cached positions")
        if n:
            self.cache.crop(-n)
            self._pos = self._pos[:-n]

    def truncate_to(self, length: int) -> None:
        self.rollback(self.length - length)

    def keep(self, indices: Sequence[int], n: int) -> None:
        """Of the last n cached slots (a tree just fed), keep `indices` in that order; drop the rest."""
        base = self.length - n
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.device) + base
        for layer in self.cache.layers:
            layer.keys = torch.cat([layer.keys[:, :, :base], layer.keys.index_select(2, idx)], dim=2)
            layer.values = torch.cat([layer.values[:, :, :base], layer.values.index_select(2, idx)], dim=2)
        if self.window:
            self._pos = torch.cat([self._pos[:base], self._pos[idx.cpu()]])

    # ------------------------------------------------------------------ early exit (layer ranges)
    def layer_length(self, layer: int) -> int:
        """Cached positions of one decoder layer (layers differ only after `forward_layers`)."""
        return self.cache.layers[layer].get_seq_length()

    def crop_to(self, length: int) -> None:
        """Cut every cache layer holding more than `length` positions back to `length` (undoes
        `forward_layers`' partial writes; `rollback` removes the same count from every layer)."""
        for layer in self.cache.layers:
            extra = layer.get_seq_length() - length
            if extra > 0:
                layer.crop(-extra)

    @torch.inference_mode()
    def forward_layers(self, x, start: int, stop: int, *, logits: bool = True, last_only: bool = False):
        """Run only decoder layers [start, stop) (early exit, nested sub-models), with their KV.

        x: token ids (start must be 0: embeddings first), or a float hidden state [n, d] entering
           layer `start` (what an earlier call returned for layer start - 1).
        The n positions follow layer `start`'s cached length, which every layer in [start, stop)
        must share; only those layers' caches grow (call `crop_to` before a full forward).
        Returns (hidden [n, d] after layer stop - 1, un-normed, on the device;
        logits = final norm + LM head of it, float32 CPU [n, V] ([V] if last_only), or None).
        Not counted in `forwards` / `tokens_fed` (those count full forwards): callers count.
        """
        if "early_exit" not in self.capabilities:
            raise NotImplementedError(f"{self.name}: forward_layers supports {', '.join(EARLY_EXIT_ARCHS)} "
                                      f"models without sliding-window layers")
        from transformers.masking_utils import create_causal_mask

        base = self.model.model
        h = self._layer_input(x, start, stop)
        past = self.layer_length(start)
        if any(self.layer_length(i) != past for i in range(start + 1, stop)):
            raise ValueError(f"layers {start}..{stop - 1} hold different cached lengths")
        pos = (past + torch.arange(h.shape[1], device=self.device)).reshape(1, -1)
        mask = create_causal_mask(config=base.config, inputs_embeds=h, attention_mask=None, cache=self.cache,
                                  position_ids=pos, layer_idx=start)
        pe = base.rotary_emb(h, position_ids=pos)
        for layer in base.layers[start:stop]:
            h = layer(h, attention_mask=mask, position_embeddings=pe, position_ids=pos, cache=self.cache,
                      use_cache=True)
        h = h[0]
        return h, (self.head(h[-1] if last_only else h) if logits else None)

    def _layer_input(self, x, start: int, stop: int) -> torch.Tensor:
        """forward_layers' input as [1, n, d]: a hidden state entering layer `start`, or token ids
        embedded (start 0 only); the layer range checked."""
        if not 0 <= start < stop <= self.num_layers:
            raise ValueError(f"layer range [{start}, {stop}) outside 0..{self.num_layers}")
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.reshape(1, -1, x.shape[-1]).to(self.device, self.model.dtype)
        if start != 0:
            raise ValueError("token ids enter at layer 0; pass a hidden state to start deeper")
        return self.model.model.embed_tokens(torch.as_tensor(x, dtype=torch.long, device=self.device).reshape(1, -1))

    @torch.inference_mode()
    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head on hidden states [..., d] (e.g. `self.hidden[l]`, l < num_layers):
        the logits an exit after layer l would give. float32 [..., V] on `logits_device`."""
        h = h.to(self.device, self.model.dtype)
        return self._out(self.model.lm_head(self.model.model.norm(h)))

    # ------------------------------------------------------------------ batches (test-time search)
    @torch.inference_mode()
    def last_logits_batch(self, seqs: Sequence[Sequence[int]], count: bool = True) -> torch.Tensor:
        """Next-token logits after each of several independent sequences: ONE left-padded
        forward with its own throwaway cache (the engine's cache is not touched). [B, V].
        count=False leaves the engine's counters alone (a judge borrowing the policy's weights
        counts its own calls)."""
        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("last_logits_batch needs non-empty sequences")
        if self.bidirectional_prompt:
            raise ValueError("last_logits_batch on a bidirectional-prompt model is not implemented")
        ids, mask, pos = left_pad(seqs)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), use_cache=False, logits_to_keep=1)
        if count:
            self.forwards += 1
            self.tokens_fed += int(mask.sum())
        return out.logits[:, -1].float().cpu()

    @torch.inference_mode()
    def hidden_batch(self, seqs: Sequence[Sequence[int]], count: bool = False) -> list[torch.Tensor]:
        """The last layer's hidden states (after the final norm) at every position of several
        independent sequences: ONE left-padded forward of the base model with no cache (the
        engine's cache and, with count=False, its counters are not touched). float32 CPU, one
        [len_i, d] tensor per sequence (a value head reads them: scorers/value_head.py)."""
        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("hidden_batch needs non-empty sequences")
        if self.bidirectional_prompt:
            raise ValueError("hidden_batch on a bidirectional-prompt model is not implemented")
        ids, mask, pos = left_pad(seqs)
        M = ids.shape[1]
        out = self.model.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                               position_ids=pos.to(self.device), use_cache=False)
        if count:
            self.forwards += 1
            self.tokens_fed += int(mask.sum())
        h = out.last_hidden_state.float().cpu()
        return [h[r, M - len(s):] for r, s in enumerate(seqs)]

    def _ensure_prefix(self, prompt_ids) -> tuple:
        """Prefill the prompt shared by `fork` / `score_suffixes` (once per prompt until reset)."""
        key = tuple(int(t) for t in prompt_ids)
        if not key:
            raise ValueError("fork needs a non-empty prompt")
        if self.bidirectional_prompt:
            raise ValueError("fork / score_suffixes on a bidirectional-prompt model are not implemented "
                             "(the shared prefill is causal); use a single-sequence strategy")
        if self._prefix is None or self._prefix[0] != key:
            cache = self.new_cache()
            ids = torch.as_tensor(key, dtype=torch.long, device=self.device).reshape(1, -1)
            with torch.inference_mode():
                out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
            self.forwards += 1
            self.tokens_fed += len(key)
            self._prefix = (key, cache, self._out(out.logits[0, -1]))
        return key

    @torch.inference_mode()
    def score_suffixes(self, prompt_ids: Sequence[int], suffixes: Sequence[Sequence[int]],
                       extra_ids: Sequence[int] = (), batch: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Teacher-forced log-probabilities of continuations of one prompt (its KV shared, as in
        `fork`): for each suffix s, (log p(s[j] | prompt, s[:j]) for j < len(s)  [len(s)],
        log p(x | prompt, s[:j]) for x in extra_ids, j <= len(s)  [len(s) + 1, len(extra_ids)]).
        `batch` suffixes per forward; float32 CPU; counted like `fork`."""
        if any(len(s) == 0 for s in suffixes):
            raise ValueError("score_suffixes needs non-empty suffixes")
        extra = torch.as_tensor(list(extra_ids), dtype=torch.long)
        out = []
        for i in range(0, len(suffixes), batch):
            chunk = [list(map(int, s)) for s in suffixes[i:i + batch]]
            self._ensure_prefix(prompt_ids)
            key, cache, last = self._prefix
            f = self.fork_class(self, cache, last, len(key), chunk, keep_all=True)
            lp_prompt = torch.log_softmax(last, -1)
            M = f.all_logits.shape[1]
            lp = torch.log_softmax(f.all_logits, -1)  # [B, M, V]
            for r, s in enumerate(chunk):
                full = torch.cat([lp_prompt[None], lp[r, M - len(s):]], 0)  # [len(s) + 1, V]
                out.append((full[torch.arange(len(s)), torch.as_tensor(s)], full[:, extra]))
        return out

    def fork(self, prompt_ids: Sequence[int], suffixes: Sequence[Sequence[int]]) -> "Fork":
        """B continuations of one prompt that share its KV: the prompt is prefilled once (and
        reused while the same prompt is forked again, until `reset()`), its cache is repeated
        B times, and each distinct suffix is fed once, in one padded forward (rows with the same
        suffix share its KV). See `Fork`."""
        key = self._ensure_prefix(prompt_ids)
        uniq: dict[tuple, int] = {}
        rows = [uniq.setdefault(tuple(int(t) for t in s), len(uniq)) for s in suffixes]
        fork = self.fork_class(self, self._prefix[1], self._prefix[2], len(key), [list(u) for u in uniq])
        if len(uniq) < len(rows):  # repeated suffixes (N samples of one state) are fed once
            fork.select(rows)
        return fork

def tree_allowed(tree: torch.Tensor, past: int) -> torch.Tensor:
    """[n, n] (or [n, past + n]) bool ancestor matrix -> bool [n, past + n] over cached + new slots."""
    tree = torch.as_tensor(tree, dtype=torch.bool).cpu()
    n = tree.shape[0]
    return tree if tree.shape[1] == past + n else torch.cat([torch.ones(n, past, dtype=torch.bool), tree], dim=1)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    """bool [..., n, S] (True = may attend) -> additive mask [B, 1, n, S] on the device."""
    m = torch.zeros(allowed.shape, dtype=dtype)
    m.masked_fill_(~allowed, torch.finfo(dtype).min)
    return m.reshape(-1, 1, *allowed.shape[-2:]).to(device)


def tree_mask_4d(tree: torch.Tensor, past: int, dtype: torch.dtype, device) -> torch.Tensor:
    """[n, n] (or [n, past + n]) bool ancestor matrix -> additive mask [1, 1, n, past + n]."""
    return additive_mask(tree_allowed(tree, past), dtype, device)


class Fork:
    """B rows = one shared prompt + a per-row suffix, grown one token per row per forward.

        fork = engine.fork(prompt, [suffix_a, suffix_b, ...])   # one forward for all suffixes
        fork.logits                                             # [B, V] next-token logits
        fork.step([tok_a, tok_b, ...])                          # one batched forward, updates logits
        fork.select([0, 2])                                     # keep some rows (drop finished ones)

    Rows have suffixes of different lengths: they are left-padded AFTER the prompt, pad slots
    are masked out for every query, and each row's positions continue its own sequence, so a
    row's logits equal those of its sequence fed alone (tests/test_search.py checks this).
    Counts its forwards and fed tokens on the engine.
    """

    def __init__(self, engine: HFEngine, prompt_cache, prompt_logits: torch.Tensor, P: int,
                 suffixes: Sequence[Sequence[int]], keep_all: bool = False):
        self.engine = engine
        B = len(suffixes)
        if B == 0:
            raise ValueError("fork needs at least one row")
        M = max(len(s) for s in suffixes)
        self.slot_pos = torch.arange(P).expand(B, P)  # position of each cached slot, per row (sliding windows)
        self._init_cache(prompt_cache, B, P)
        lens = torch.tensor([len(s) for s in suffixes])
        self.allowed = torch.ones(B, P + M, dtype=torch.bool)  # which cached slots each row sees
        for r, n in enumerate(lens.tolist()):
            self.allowed[r, P:P + M - n] = False
        self.next_pos = P + lens  # absolute position of each row's next token
        self.logits = prompt_logits.expand(B, -1).clone()
        if M:
            ids = torch.zeros(B, M, dtype=torch.long)
            for r, s in enumerate(suffixes):
                if len(s):
                    ids[r, M - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            pos = (P + lens - M).reshape(-1, 1) + torch.arange(M).reshape(1, -1)  # pads get < P: masked
            q_allowed = self.allowed[:, None, :].expand(B, M, P + M).clone()
            causal = torch.tril(torch.ones(M, M, dtype=torch.bool))
            q_allowed[:, :, P:] &= causal
            q_allowed[:, :, :P] = True
            out = self._forward(ids, pos.clamp_min(0), q_allowed)
            if keep_all:  # every position's logits [B, M, V] (rows left-padded): score_suffixes
                self.all_logits = out
            has = lens > 0
            self.logits[has] = out[has, -1]
            engine.tokens_fed += int(lens.sum())

    def _init_cache(self, prompt_cache, B: int, P: int) -> None:
        """B copies of the prompt's KV."""
        self.cache = self.engine.new_cache()
        for i, layer in enumerate(prompt_cache.layers):
            self.cache.update(layer.keys.expand(B, -1, -1, -1).contiguous(),
                              layer.values.expand(B, -1, -1, -1).contiguous(), i)

    def _select_cache(self, idx: torch.Tensor) -> None:
        self.cache.batch_select_indices(idx.to(self.engine.device))

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, q_allowed: torch.Tensor) -> torch.Tensor:
        """ids, pos [B, M]; q_allowed bool [B, M, S + M] over cached + new slots -> logits [B, M, V]."""
        e = self.engine
        kpos = torch.cat([self.slot_pos, pos], dim=1)
        mask = e._masks(q_allowed, pos, kpos)
        self.slot_pos = kpos
        with torch.inference_mode():
            out = e.model(input_ids=ids.to(e.device), cache=self.cache, use_cache=True,
                          position_ids=pos.to(e.device), attention_mask=mask)
        e.forwards += 1
        return e._out(out.logits)

    @property
    def rows(self) -> int:
        return self.allowed.shape[0]

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Append one token to every row; returns (and stores) the new logits [B, V]."""
        B = self.rows
        if len(tokens) != B:
            raise ValueError(f"step needs one token per row ({B}), got {len(tokens)}")
        self.allowed = torch.cat([self.allowed, torch.ones(B, 1, dtype=torch.bool)], dim=1)
        ids = torch.as_tensor(list(tokens), dtype=torch.long).reshape(B, 1)
        out = self._forward(ids, self.next_pos.reshape(B, 1), self.allowed[:, None, :])
        self.next_pos = self.next_pos + 1
        self.engine.tokens_fed += B
        self.logits = out[:, -1]
        return self.logits

    def feed(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append a different number of tokens to each row in ONE forward (batched verification).

        Rows are left-padded inside the new block (pad slots masked for every query), each row's
        positions continue its own sequence. Returns the block's logits [B, M, V], right-aligned:
        row r's logits after seqs[r][j] are at [r, M - len(seqs[r]) + j]; `self.logits` becomes
        each row's logits after its last token (unchanged for a row given no tokens)."""
        B = self.rows
        if len(seqs) != B:
            raise ValueError(f"feed needs one token list per row ({B}), got {len(seqs)}")
        lens = torch.tensor([len(x) for x in seqs])
        M = int(lens.max()) if B else 0
        if M == 0:
            return self.logits.new_zeros(B, 0, self.logits.shape[-1])
        new = torch.zeros(B, M, dtype=torch.bool)
        ids = torch.zeros(B, M, dtype=torch.long)
        for r, x in enumerate(seqs):
            if len(x):
                new[r, M - len(x):] = True
                ids[r, M - len(x):] = torch.as_tensor([int(t) for t in x], dtype=torch.long)
        pos = self.next_pos.reshape(-1, 1) + torch.arange(M).reshape(1, -1) - (M - lens).reshape(-1, 1)
        S = self.allowed.shape[1]
        q_allowed = torch.cat([self.allowed[:, None, :].expand(B, M, S),
                               new[:, None, :] & torch.tril(torch.ones(M, M, dtype=torch.bool))[None]], dim=2)
        out = self._forward(ids, pos.clamp_min(0), q_allowed)
        self.allowed = torch.cat([self.allowed, new], dim=1)
        self.next_pos = self.next_pos + lens
        self.engine.tokens_fed += int(lens.sum())
        has = lens > 0
        self.logits = self.logits.clone()
        self.logits[has] = out[has, -1]
        return out

    def drop_last(self, row: int, n: int) -> None:
        """Forget row `row`'s last n tokens (rejected drafts): their slots stay in the cache but
        are masked for every later query, and the row's next position moves back by n. The row's
        `logits` are NOT recomputed (the caller has the logits of the kept prefix)."""
        if n <= 0:
            return
        live = self.allowed[row].nonzero().flatten()
        if n > len(live):
            raise ValueError(f"row {row} has {len(live)} visible slots, cannot drop {n}")
        self.allowed[row, live[-n:]] = False
        self.next_pos[row] -= n

    def select(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order (a repeated row gets its own copy of the KV)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        self._select_cache(idx)
        self.allowed, self.next_pos, self.logits = self.allowed[idx], self.next_pos[idx], self.logits[idx]
        self.slot_pos = self.slot_pos[idx]


HFEngine.fork_class = Fork  # StaticEngine forks over its own buffers (harness/engines/static.py)
