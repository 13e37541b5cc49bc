"""Shared pure functions on distributions: logits processing, sampling, the accept/reject rule.

Notation (docs/strategies.md): p = target distribution, q = draft distribution.
All functions take float32 logits/probabilities on the last dimension.
"""

from __future__ import annotations

import torch


def process(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
            min_p: float = 0.0, top_h: float = 0.0) -> torch.Tensor:
    """Logits -> probabilities after temperature, top-k, top-H, top-p (nucleus) and min-p truncation.

    temperature == 0 gives the one-hot argmax (greedy). Truncations apply in the order
    temperature -> top-k -> top-H -> top-p -> min-p, each keeping at least the top token.
    """
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.float32)
    x = logits / temperature
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_h > 0.0:
        x = x.masked_fill(~top_h_keep(x, top_h), float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if top_p < 1.0:
        sp, si = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sp, dim=-1) - sp  # mass strictly above each token
        drop = before >= top_p
        drop[..., 0] = False
        probs = probs.masked_fill(torch.zeros_like(drop).scatter(-1, si, drop), 0.0)
    if min_p > 0.0:
        thresh = min_p * probs.max(dim=-1, keepdim=True).values
        probs = probs.masked_fill(probs < thresh, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


SPARSE_VOCAB = 4096   # above this vocabulary size, truncated sampling sorts only the top candidates
NUCLEUS_PROBES = (64, 1024)  # candidates looked at for a nucleus, smallest first (then the whole vocabulary)
TOP_BLOCK = 128  # top_m's block size
_OFFSETS = torch.arange(TOP_BLOCK)


def top_m(x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.topk(x, m, dim=-1)` for rows x [B, V] (values sorted, largest first; the same values,
    and the same ids unless values tie), in two small passes instead of one over all V: the
    per-row maxima of blocks of TOP_BLOCK tokens (an `amax`, far cheaper than a top-k on CPU), the
    m blocks with the largest maxima, then a top-m over those m blocks' tokens (plus the tail that
    does not fill a block). Exact: a block holding one of the m largest values has a maximum at
    least that large, so it is among the m chosen (or every block with that maximum is, and with
    it every tie). A top-64 of 8 rows here: 152k vocabulary 1.2-1.3 -> 0.5-0.6 ms, 49k 0.4-0.5 ->
    0.3-0.45 ms. Falls back to `torch.topk` where there are fewer than 4m blocks."""
    B, V = x.shape
    nb = V // TOP_BLOCK
    if nb < 4 * m:
        return torch.topk(x, m, dim=-1)
    head = x[:, : nb * TOP_BLOCK].reshape(B, nb, TOP_BLOCK)
    blocks = torch.topk(head.amax(-1), m, dim=-1, sorted=False).indices  # [B, m]
    ids = (blocks.unsqueeze(-1) * TOP_BLOCK + _OFFSETS.to(x.device)).reshape(B, m * TOP_BLOCK)
    if nb * TOP_BLOCK < V:
        ids = torch.cat([ids, torch.arange(nb * TOP_BLOCK, V, device=x.device).expand(B, -1)], dim=1)
    vals, j = torch.topk(x.gather(1, ids), m, dim=-1)
    return vals, ids.gather(1, j)


def sparse_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`process`'s distribution on its support only: (p [B, m], ids [B, m]) with p summing to 1
    per row and zero outside it, or None where that would not be exact (then use `process`).

    For a large vocabulary, sorting every row (what `process` does for top-p) costs more than the
    model's own step at batch 8: here only the m = top_k (or, for a nucleus, the first of
    NUCLEUS_PROBES that holds every row's nucleus: 64, else 1024) largest logits (for a nucleus:
    probabilities of the full softmax, one fused kernel, cheaper here than a logsumexp) are found
    (`top_m`) and sorted, and the nucleus is cut from them. Exact when the top m hold
    the whole support: None if a row's top 1024 carry less than top_p, or if logits tie at the
    k-th value (process keeps every tie)."""
    B, V = logits.shape
    if V <= SPARSE_VOCAB or temperature == 0 or (top_p >= 1.0 and not top_k) or top_p <= 0.0:
        return None
    x = logits / temperature if temperature != 1.0 else logits
    probes = [min(V, top_k)] if top_k else sorted({min(V, m) for m in NUCLEUS_PROBES})
    full = None if top_k else torch.softmax(x, dim=-1)  # top-k renormalises over its own set
    for m in probes:
        if top_k:
            vals, ids = top_m(x, m)
            if m < V and bool(((x >= vals[:, -1:]).sum(-1) > m).any()):
                return None  # ties at the k-th logit: process keeps them all
            p = torch.softmax(vals, dim=-1)
        else:  # the nucleus is cut from the largest probabilities, as process sorts them
            p, ids = top_m(full, m)
        if top_p < 1.0:
            cum = torch.cumsum(p, dim=-1)
            if not top_k and m < V and float(cum[:, -1].min()) < top_p:
                continue  # some nucleus reaches past this probe: a larger one, or the whole vocabulary
            p = p.masked_fill(cum - p >= top_p, 0.0)  # the mass above the first token is 0 < top_p: kept
        if min_p > 0.0:
            p = p.masked_fill(p < min_p * p[:, :1], 0.0)
        return p / p.sum(-1, keepdim=True), ids
    return None


def sample_rows(logits: torch.Tensor, rng: torch.Generator, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, min_p: float = 0.0, top_h: float = 0.0) -> torch.Tensor:
    """One token per row of logits [B, V], drawn from `process(...)`'s distribution: on the sparse
    support when `sparse_probs` applies (the draw then uses the generator differently from a draw
    over all V, but from the same distribution), else over the full vocabulary."""
    sp = None if top_h > 0.0 else sparse_probs(logits, temperature, top_k, top_p, min_p)
    if sp is None:
        return torch.multinomial(process(logits, temperature, top_k, top_p, min_p, top_h), 1, generator=rng).reshape(-1)
    p, ids = sp
    return ids.gather(1, torch.multinomial(p, 1, generator=rng)).reshape(-1)


TOP_H_CANDIDATES = 100  # Top-H looks at the 100 most probable tokens


def top_h_keep(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Top-H (entropy-bounded truncation): which tokens of tempered logits x [..., V] to keep.

    Renormalise the TOP_H_CANDIDATES most probable tokens into r; the budget is
    tau = alpha * H(r). Walking down r in decreasing order, a token is kept while the running
    sum of -r log r up to and including it stays <= tau; the most probable token is always kept
    (alpha = 1 keeps all candidates).
    Returns a bool mask [..., V]."""
    n = min(TOP_H_CANDIDATES, x.shape[-1])
    vals, idx = torch.topk(x, n, dim=-1)  # sorted, largest first
    logr = torch.log_softmax(vals.float(), dim=-1)
    terms = -(logr.exp() * logr)
    terms = torch.where(torch.isfinite(terms), terms, torch.zeros_like(terms))  # r = 0: no entropy
    tau = alpha * terms.sum(-1, keepdim=True)
    inside = terms.cumsum(-1) <= tau * (1 + 1e-5)  # float rounding never drops a token at exactly tau

    inside[..., 0] = True
    return torch.zeros(x.shape, dtype=torch.bool, device=x.device).scatter(-1, idx, inside)


def uniform(rng: torch.Generator) -> float:
    """One U(0, 1) draw from the generator, made on the generator's own device (a CUDA generator
    cannot draw a CPU tensor)."""
    return float(torch.rand((), generator=rng, device=rng.device))


def sample(probs: torch.Tensor, rng: torch.Generator) -> int:
    """One draw from a probability vector [V] (argmax-exact for one-hot inputs)."""
    return int(torch.multinomial(probs, 1, generator=rng).item())


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)); falls back to p where p <= q everywhere (cannot happen after a rejection)."""
    r = torch.clamp(p - q, min=0.0)
    s = r.sum()
    return r / s if s > 0 else p


def accept_draft(p: torch.Tensor, q: torch.Tensor, x: int, rng: torch.Generator) -> bool:
    """The speculative sampling rule: accept draft token x ~ q with probability min(1, p(x)/q(x))."""
    px, qx = float(p[x]), float(q[x])
    if qx <= 0.0:
        return False
    u = uniform(rng)
    return u * qx < px  # u < p/q without dividing; p >= q always accepts since u < 1


def verify_chain(p: torch.Tensor, q: torch.Tensor | None, drafts: list[int], rng: torch.Generator,
                 greedy: bool) -> tuple[int, int]:
    """Verify a chain of drafts against target probabilities.

    p: [K+1, V] target probabilities at each draft position and the bonus position.
    q: [K, V] draft probabilities (None = drafts were deterministic: q is a point mass).
    Returns (n_accepted, next_token): the first n drafts are kept, then next_token (a
    correction sampled from the residual, or the bonus token when all K were accepted).
    """
    k = len(drafts)
    for i, x in enumerate(drafts):
        if greedy:
            nxt = int(p[i].argmax())
            if nxt != x:
                return i, nxt
            continue
        qi = q[i].to(p.device) if q is not None else \
            torch.nn.functional.one_hot(torch.tensor(x, device=p.device), p.shape[-1]).float()
        if accept_draft(p[i], qi, x, rng):
            continue
        return i, sample(residual(p[i], qi), rng)
    return k, (int(p[k].argmax()) if greedy else sample(p[k], rng))


def gumbel_top_k(probs: torch.Tensor, k: int, rng: torch.Generator) -> list[int]:
    """k distinct tokens drawn WITHOUT replacement from `probs` (Gumbel-Top-k trick), in draw order."""
    k = min(k, int((probs > 0).sum()))
    g = -torch.log(-torch.log(torch.rand(probs.shape, generator=rng, device=probs.device).clamp_min(1e-20)))
    keys = torch.where(probs > 0, torch.log(probs.clamp_min(1e-38)) + g, torch.tensor(float("-inf"), device=probs.device))
    return torch.topk(keys, k).indices.tolist()


def verify_tree(p: torch.Tensor, tokens: list[int], parents: list[int], q_by_parent: dict | None,
                rng: torch.Generator, greedy: bool) -> tuple[list[int], int]:
    """Verify a token tree against target probabilities; return (accepted node path, next token).

    p: [n + 1, V]: row 0 = target distribution after the committed sequence (the tree's root
       context), row i + 1 = after node i (its path from the root).
    tokens / parents: node i holds tokens[i]; parents[i] is its parent node (-1 = the root).
       Siblings appear in the order they were drafted.
    q_by_parent: {parent index: [V] draft distribution its children were drawn from WITHOUT
       replacement, in sibling order} (RSD); not needed when greedy.
    Greedy: follow the child equal to the target's argmax (longest matching path).
    Stochastic: recursive rejection sampling over siblings (RSD): sibling x_i is accepted with
    min(1, p_res(x_i) / q_i(x_i)); on rejection p_res <- norm(max(0, p_res - q_i)) and x_i is
    removed from q (q renormalised) for the next sibling; if all fail, sample from p_res. Each
    emitted token is then distributed exactly as p (a chain is the one-sibling special case).
    """
    children: dict[int, list[int]] = {}
    for i, par in enumerate(parents):
        children.setdefault(par, []).append(i)
    path, cur = [], -1
    while True:
        row, kids = p[cur + 1], children.get(cur, [])
        if greedy:
            t = int(row.argmax())
            nxt = next((c for c in kids if tokens[c] == t), None)
            if nxt is None:
                return path, t
            path.append(nxt)
            cur = nxt
            continue
        if not kids:
            return path, sample(row, rng)
        q, p_res, accepted = q_by_parent[cur].to(row.device).clone(), row, None  # a drafter's q may be a CPU table
        for c in kids:
            x = tokens[c]
            if accept_draft(p_res, q, x, rng):
                accepted = c
                break
            p_res = residual(p_res, q)
            q[x] = 0.0  # the next sibling was drawn from q without x
            if q.sum() <= 0:
                break
            q = q / q.sum()
        if accepted is None:
            return path, sample(p_res, rng)
        path.append(accepted)
        cur = accepted


def kseq_rho(p: torch.Tensor, q: torch.Tensor, k: int, iters: int = 40) -> float:
    """SpecTr's rho for k-sequential selection: the smallest rho in [1, k] with
    (1 - (1 - beta)^k) / beta <= rho, beta = sum_x min(q(x), p(x)/rho): then the leftover mass
    p - min(q, p/rho) * (1 - (1 - beta)^k) / beta is non-negative (exactly max(0, p - rho q) at
    equality) and the acceptance probability is (1 - 1/e)-optimal (Sun et al. 2023)."""
    def excess(rho):
        beta = float(torch.minimum(q, p / rho).sum())
        return (1 - (1 - beta) ** k) / beta - rho if beta > 0 else -rho
    if k <= 1 or excess(1.0) <= 0:
        return 1.0
    lo, hi = 1.0, float(k)
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def kseq_select(p: torch.Tensor, q: torch.Tensor, cands: list[int], rho: float,
                rng: torch.Generator) -> tuple[int | None, torch.Tensor]:
    """k-sequential selection over i.i.d. candidates from q: accept the first x_i with
    U <= min(1, p(x_i) / (rho q(x_i))). Returns (index of the accepted candidate or None, the
    distribution to sample from when none is accepted)."""
    for i, x in enumerate(cands):
        if uniform(rng) * rho * float(q[x]) < float(p[x]):
            return i, p
    k = len(cands)
    beta = float(torch.minimum(q, p / rho).sum())
    scale = (1 - (1 - beta) ** k) / beta if beta > 0 else 0.0
    left = torch.clamp(p - torch.minimum(q, p / rho) * scale, min=0.0)
    return None, (left / left.sum() if left.sum() > 0 else p)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits) over the last dimension (raw logits: no
    temperature or truncation). [..., V] -> [...]; -inf logits contribute 0."""
    p = torch.softmax(logits.float(), dim=-1)
    return torch.special.entr(p).sum(-1) / torch.log(torch.tensor(2.0))
