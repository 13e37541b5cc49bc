"""Truncated sampling on the top candidates only (strategies/core/probs.py: sparse_probs,
sample_rows) gives exactly `process`'s distribution on large vocabularies, and falls back to the
full vocabulary where the top candidates do not hold the support."""

from __future__ import annotations

import pytest
import torch

from strategies.core import probs as P

V = 20000


def dense_from_sparse(sp, shape):
    p, ids = sp
    return torch.zeros(shape).scatter(1, ids, p)


def logits(seed, scale):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, V, generator=g) * scale


@pytest.mark.parametrize("kw", [dict(temperature=0.8, top_p=0.95), dict(temperature=1.0, top_p=0.5),
                                dict(temperature=0.7, top_k=50), dict(temperature=1.0, top_k=300, top_p=0.9),
                                dict(temperature=0.9, top_p=0.95, min_p=0.05), dict(temperature=1.3, top_k=7)])
def test_sparse_equals_process(kw):
    x = logits(0, 4.0)  # peaked enough that the nucleus fits in the probe
    sp = P.sparse_probs(x, **kw)
    assert sp is not None
    ref = P.process(x, **kw)
    assert torch.allclose(dense_from_sparse(sp, x.shape), ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(dense_from_sparse(sp, x.shape) > 0, ref > 0)  # the same support, token for token


def test_fallbacks():
    flat = logits(1, 0.01)  # the nucleus spans most of the vocabulary: past the probe
    assert P.sparse_probs(flat, temperature=1.0, top_p=0.95) is None
    tied = torch.zeros(2, V)
    tied[:, :10] = 5.0  # ten tokens tie at the top: top_k = 4 keeps all ten in process
    assert P.sparse_probs(tied, temperature=1.0, top_k=4) is None
    assert P.sparse_probs(logits(2, 4.0)[:, :1000], temperature=1.0, top_p=0.9) is None  # small vocabulary
    assert P.sparse_probs(logits(2, 4.0), temperature=1.0) is None  # no truncation


def test_nucleus_between_the_probes():
    """A nucleus wider than the first probe (64) but inside the second (1024) is found on the
    second, exactly; one wider than both falls back; a narrow one uses the first probe."""
    x = torch.full((2, V), -40.0)
    x[:, :300] = torch.linspace(3.0, 0.0, 300)  # ~300 near-flat tokens hold all the mass
    kw = dict(temperature=1.0, top_p=0.95)
    sp = P.sparse_probs(x, **kw)
    assert sp is not None and sp[0].shape[1] == P.NUCLEUS_PROBES[1]
    ref = P.process(x, **kw)
    assert 64 < int((ref[0] > 0).sum()) <= 1024
    assert torch.allclose(dense_from_sparse(sp, x.shape), ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(dense_from_sparse(sp, x.shape) > 0, ref > 0)
    y = torch.full((2, V), -40.0)
    y[:, 7:17] = torch.linspace(2.0, 0.0, 10)
    narrow = P.sparse_probs(y, **kw)
    assert torch.allclose(dense_from_sparse(narrow, y.shape), P.process(y, **kw), atol=1e-6, rtol=1e-5)
    assert narrow is not None and narrow[0].shape[1] == P.NUCLEUS_PROBES[0]
    x[1, :3000] = torch.linspace(1.0, 0.0, 3000)  # one row's nucleus spans past 1024
    assert P.sparse_probs(x, **kw) is None


def test_sample_rows_frequencies():
    """Draws land on the support with the support's probabilities (chi-square over 20k draws)."""
    x = torch.full((1, V), -30.0)
    x[0, [5, 900, 17000, 3]] = torch.tensor([2.0, 1.0, 0.5, 0.0])
    rng = torch.Generator().manual_seed(0)
    kw = dict(temperature=1.0, top_p=0.9)
    ref = P.process(x, **kw)[0]
    draws = torch.stack([P.sample_rows(x.expand(500, V), rng, **kw) for _ in range(40)]).flatten()
    assert set(draws.tolist()) <= set(ref.nonzero().flatten().tolist())
    support = ref.nonzero().flatten()
    counts = torch.stack([(draws == t).sum() for t in support]).float()
    expected = ref[support] * len(draws)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # 3 degrees of freedom at most: p = 0.001
    # a broken nucleus (keeping the last token too) would put ~2% of draws on token 3
    assert int((draws == 3).sum()) == 0


@pytest.mark.parametrize("V", [P.TOP_BLOCK * 300, P.TOP_BLOCK * 300 + 77])  # a tail that fills no block
@pytest.mark.parametrize("m", [1, 7, 64])
def test_top_m_equals_topk(V, m):
    """top_m (block maxima, then a top-m over the m best blocks) returns torch.topk's values,
    with ids that hold them, also when the largest values crowd into one block, sit in the tail,
    or tie across blocks."""
    g = torch.Generator().manual_seed(V + m)
    x = torch.randn(5, V, generator=g)
    x[1, 256:256 + 64] += 20.0  # row 1: the top values all in two neighbouring blocks
    x[2, -40:] += 20.0  # row 2: in the last block or the tail
    x[3, :: P.TOP_BLOCK] = 9.0  # row 3: a tie at the top of every block
    x[4] = torch.round(x[4] * 2) / 2  # row 4: many ties everywhere
    vals, ids = P.top_m(x, m)
    ref = torch.topk(x, m, dim=-1)
    assert torch.equal(vals, ref.values)
    assert torch.equal(x.gather(1, ids), vals)
    assert all(len(set(r)) == m for r in ids.tolist())  # distinct tokens
