"""AdaDec (strategies/adadec.py) and its threshold tool (tools/learn_adadec_threshold.py) on tiny
models: the entropy gate, the lookahead rerank against a brute-force recomputation, the learned
threshold's artifact checks (missing, foreign), and the logistic fit on a known case."""

import json

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from strategies.adadec import AdaDec, entropy, identity
from strategies.sampling import Sampling
from tools.learn_adadec_threshold import auc, fit_logistic, learn

PROMPT = [5, 17, 42, 99, 3, 250, 12]


@pytest.fixture(scope="module")
def mid_target():
    """Between the flat default and the peaked model: context-sensitive (a lookahead that lost its
    context picks other tokens) and uncertain enough that reranking departs from greedy."""
    from tests.conftest import tiny_spec

    return tiny_spec("tiny-mid", seed=0, init_std=0.3).load()


def _greedy(engine, prompt, n):
    return Sampling({"temperature": 0}).generate(engine, prompt, n, torch.Generator()).tokens


def test_infinite_threshold_is_greedy(tiny_target):
    tr = AdaDec(threshold=float("inf")).generate(tiny_target, PROMPT, 20, torch.Generator())
    assert tr.tokens == _greedy(tiny_target, PROMPT, 20) and tr.extra["pauses"] == 0


def _brute_choice(engine, seq, k, L):
    """Rerank the top-k next tokens by mean log-prob of token + its greedy L-token lookahead,
    each recomputed with plain full forwards (no cache, no tree)."""
    model = engine.model

    def lp(ids):
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)

    root = lp(seq)
    best, best_s = None, -1e9
    for c in torch.topk(root, k).indices.tolist():
        ids, s = seq + [c], float(root[c])
        for _ in range(L):
            d = lp(ids)
            t = int(d.argmax())
            s += float(d[t])
            ids.append(t)
        if s / (1 + L) > best_s:
            best, best_s = c, s / (1 + L)
    return best


@pytest.mark.parametrize("k,L", [(3, 5), (2, 1), (4, 3)])
def test_every_pause_takes_the_brute_force_choice(mid_target, k, L):
    tiny_target = mid_target
    """threshold = 0: a pause at every token; each emitted token must be the brute-force rerank."""
    tr = AdaDec(threshold=0.0, top_k=k, lookahead=L).generate(tiny_target, PROMPT, 8, torch.Generator())
    seq = list(PROMPT)
    for tok in tr.tokens[:-1]:  # the last token has no room for a pause (budget)
        assert tok == _brute_choice(tiny_target, seq, k, L)
        seq.append(tok)
    assert tr.extra["pauses"] == len(tr.tokens) - 1 and tr.extra["lookahead_forwards"] == L * tr.extra["pauses"]
    assert tr.extra["changed"] > 0  # the rerank departed from greedy at some pause (the test can see a bug)


def test_the_gate_uses_the_entropy(tiny_target):
    """A threshold between the entropies met on the greedy path pauses exactly where H >= tau."""
    g = _greedy(tiny_target, PROMPT, 12)
    tiny_target.reset()
    logits = tiny_target.forward(PROMPT + g[:-1])[len(PROMPT) - 1:]
    H = [entropy(x) for x in logits]
    tau = float(np.median(H))
    tr = AdaDec(threshold=tau, top_k=2, lookahead=2).generate(tiny_target, PROMPT, 12, torch.Generator())
    if tr.extra["changed"] == 0:  # the path stayed greedy: the pauses are where H >= tau
        assert tr.extra["pauses"] == sum(h >= tau for h in H[:-1])
    assert 0 < tr.extra["pauses"] < 12


def test_threshold_artifact_missing_and_foreign(tiny_target, tiny_draft, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        AdaDec(threshold_path=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="exactly one"):
        AdaDec()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 250, (6,), generator=g).tolist() for _ in range(6)]
    refs = [_greedy(tiny_target, p, 6)[:3] + torch.randint(5, 250, (5,), generator=g).tolist() for p in prompts]
    out = learn(tiny_target, prompts, refs, [f"p{i}" for i in range(6)], "synthetic")
    assert out["model"] == identity(tiny_target) and out["positions"] == 48
    path = tmp_path / "tau.json"
    path.write_text(json.dumps(out))
    s = AdaDec(threshold_path=str(path))
    assert s.threshold == pytest.approx(out["threshold"]) and "threshold_path" in s.artifacts()
    s.setup(tiny_target)  # its own model: fine
    with pytest.raises(ConfigError, match="learned for"):
        s.setup(tiny_draft)  # another model: refused before any example


def test_logistic_fit_recovers_a_known_boundary():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 4, 20000)
    y = (rng.uniform(size=x.size) < 1 / (1 + np.exp(-(3.0 * x - 4.5)))).astype(float)
    a, b = fit_logistic(x, y, balanced=False)
    assert a == pytest.approx(3.0, rel=0.1) and -b / a == pytest.approx(1.5, abs=0.05)
    assert auc(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([0.0, 1.0])) == 0.5
