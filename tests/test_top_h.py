"""Top-H (strategies/top_h.py, strategies/core/probs.top_h_keep): the kept set equals the
transformers peer's on random logit vectors; the rule's own properties; the strategy samples
the processed distribution."""

import pytest
import torch

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import SamplingParams
from strategies.top_h import TopH
from tests.test_distribution import chi2_pvalue, empirical, exact_joint


def _peer_keep(x: torch.Tensor, alpha: float) -> torch.Tensor:
    from transformers.generation.logits_process import TopHLogitsWarper

    return torch.isfinite(TopHLogitsWarper(top_h=alpha)(None, x.clone()))


@pytest.mark.parametrize("alpha", [0.1, 0.4, 0.8, 0.95])
def test_kept_set_equals_the_transformers_warper(alpha):
    g = torch.Generator().manual_seed(int(alpha * 10))
    sizes = []
    for i in range(300):
        V = [50, 100, 1000][i % 3]  # fewer, exactly, and more tokens than the 100 candidates
        scale = [0.5, 2.0, 6.0][(i // 3) % 3]  # flat to peaked
        x = torch.randn(2, V, generator=g) * scale / [1.0, 1.5, 2.0][(i // 9) % 3]  # tempered logits
        ours = P.top_h_keep(x, alpha)
        assert torch.equal(ours, _peer_keep(x, alpha)), f"vector {i}: kept sets differ"
        sizes += ours.sum(-1).tolist()
    assert min(sizes) >= 1 and max(sizes) > 5  # non-trivial sets were compared


def test_rule_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 500, generator=g) * 2
    prev = None
    for alpha in (0.05, 0.2, 0.4, 0.7, 1.0):
        keep = P.top_h_keep(x, alpha)
        assert keep[torch.arange(8), x.argmax(-1)].all()  # the most probable token is always kept
        assert (keep.sum(-1) <= P.TOP_H_CANDIDATES).all()
        if prev is not None:
            assert (keep | ~prev).all() and (keep.sum() >= prev.sum())  # a larger budget keeps a superset
        prev = keep
    assert P.top_h_keep(x, 1.0)[:, :].sum(-1).eq(P.TOP_H_CANDIDATES).all()  # alpha = 1: every candidate
    peaked = torch.full((1, 100), -20.0)
    peaked[0, 7] = 20.0
    p = P.process(peaked, 1.0, top_h=0.4)[0]
    assert p[7] >= 1 - 1e-6  # a near-certain distribution stays near-certain


def test_top_h_strategy_samples_the_processed_distribution(small_models):
    target, _ = small_models
    sp = SamplingParams(temperature=1.5, top_h=0.6)
    assert chi2_pvalue(empirical(TopH(alpha=0.6, sampling={"temperature": 1.5}), target),
                       exact_joint(target, sp)) > 1e-3


def test_bad_config():
    with pytest.raises(ConfigError, match="alpha"):
        TopH(alpha=0.0)
    assert TopH(sampling={"temperature": 0.0}).sampling.greedy  # T = 0 is greedy (the truncation keeps the top-1)
    assert TopH().params()["top_h"] == 0.4 and TopH().params()["alpha"] == 0.4
