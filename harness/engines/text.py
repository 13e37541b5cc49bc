"""The text side every engine shares: a transformers tokenizer behind render / encode / decode."""

from __future__ import annotations

from collections.abc import Sequence


class TokenizerText:
    """Mixin: `self.tokenizer` (a transformers tokenizer, or the tiny models' byte tokenizer)."""

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

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    def encode(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; special=True adds the tokenizer's own special tokens (its BOS)."""
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=special)]

    def token_text(self, token: int) -> str:
        """The text of one token (cached: search decodes token by token)."""
        cache = self.__dict__.setdefault("_token_text", {})
        s = cache.get(token)
        if s is None:
            s = cache[token] = self.tokenizer.decode([int(token)])
        return s

    def special_id(self, kind: str) -> int | None:
        """The tokenizer's eos / pad / unk / bos id, or None when it has none."""
        if kind not in ("eos", "pad", "unk", "bos"):
            raise ValueError(f"unknown special token kind '{kind}'")
        i = getattr(self.tokenizer, f"{kind}_token_id", None)
        return i if isinstance(i, int) else None

    @property
    def vocab_entries(self) -> int:
        """Entries of the token <-> id map (may differ from the logits' width)."""
        return len(self.tokenizer)

    def vocabulary_fingerprint(self) -> str:
        return vocabulary_fingerprint(self.tokenizer)

    def vocabulary_signature(self):
        """Identity of the token<->id map, to refuse a draft whose vocabulary differs."""
        tok = self.tokenizer
        if hasattr(tok, "get_vocab"):
            vocab = tok.get_vocab()
            return len(vocab), hash(frozenset(vocab.items()))
        return ("bytes", len(tok))


def eos_set(*sources) -> frozenset:
    """The end-of-sequence ids named by several sources (an int, a list of ints, or None each)."""
    eos = set()
    for src in sources:
        if isinstance(src, int):
            eos.add(src)
        elif isinstance(src, (list, tuple)):
            eos.update(int(x) for x in src)
    return frozenset(eos)


def vocabulary_fingerprint(tok) -> str:
    """A stable identity of a tokenizer's token <-> id map (same across processes)."""
    import hashlib
    import json

    if hasattr(tok, "get_vocab"):
        items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
        return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{type(tok).__name__}-{len(tok)}"
