"""GRAD (strategies/grad.py): the graph equals the summed logits of actual next tokens computed by
hand; rows are max-normalised; strength 0 is the model's own decoding; a strong graph walks the
corpus's transitions; the fusion is adaptive (none when the model is certain); artifacts are
tied to their model."""

import pytest
import torch

from harness.decoding import Prompt
from harness.errors import ConfigError
from strategies.adadec import identity
from strategies.grad import GRAD, Graph, fuse
from strategies.sampling import Sampling


def test_graph_is_the_sum_of_next_token_logits(tiny_target):
    seqs = [[10, 20, 30, 20, 30], [20, 30, 40]]
    g = Graph.build(tiny_target, seqs)
    want: dict = {}
    for s in seqs:
        with torch.no_grad():
            z = tiny_target.model(torch.tensor([s])).logits[0].float()
        for i in range(len(s) - 1):
            want[(s[i], s[i + 1])] = want.get((s[i], s[i + 1]), 0.0) + float(z[i, s[i + 1]])
    got = {(c, d): v for c, r in g.rows.items() for d, v in r.items()}
    assert got.keys() == want.keys() and g.edges == 4  # (10,20) (20,30) (30,20) (30,40)
    assert all(abs(got[k] - want[k]) < 1e-4 for k in want)
    row = g.row(30, tiny_target.vocab_size)
    pos = {d: v for d, v in g.rows[30].items() if v > 0}
    if pos:
        assert float(row.max()) == pytest.approx(1.0) and set(row.nonzero().flatten().tolist()) == set(pos)
    assert g.row(99, tiny_target.vocab_size) is None


def test_strength_zero_is_the_models_decoding(tiny_target):
    prompt = [5, 17, 42, 99, 3]
    greedy = Sampling({"temperature": 0}).generate(tiny_target, prompt, 16, torch.Generator()).tokens
    tr = GRAD(strength=0.0).generate(tiny_target, Prompt(prompt, context=["a b c d e f"]), 16, torch.Generator())
    assert tr.tokens == greedy and tr.extra["changed"] == 0


def test_a_strong_graph_walks_the_corpus(tiny_target, tmp_path):
    """A graph where every token of a chain has one successor (positive weights, as a real LM's
    logits of its corpus tokens are): with a large strength the output follows the chain from the
    prompt's last token (a flat random model is never confident)."""
    chain = [40, 41, 42, 43, 44, 45, 46]
    g = Graph({c: {d: 12.0} for c, d in zip(chain[:-1], chain[1:])}, {"model": identity(tiny_target)})
    g.save(tmp_path / "chain.pt")
    tr = GRAD(graph_path=str(tmp_path / "chain.pt"), strength=50.0).generate(
        tiny_target, [5, 17, chain[0]], len(chain) - 1, torch.Generator())
    assert tr.tokens == chain[1:]
    assert tr.extra["fused"] == len(chain) - 1 and tr.extra["changed"] >= 1 and tr.extra["graph_forwards"] == 0


def test_context_graph_is_built_per_example(tiny_target):
    tr = GRAD(strength=1.0).generate(tiny_target, Prompt([5, 17, 3], context=["abc", "de"]), 4, torch.Generator())
    assert tr.extra["graph_forwards"] == 2 and tr.extra["graph_edges"] == 3
    assert tr.target_forwards == 2 + 4  # the graph's forwards are the example's


def test_fusion_is_adaptive():
    g = torch.tensor([0.0, 0.0, 1.0, 0.0])
    certain = torch.tensor([40.0, 0.0, 0.0, 0.0])
    unsure = torch.tensor([1.0, 0.9, 0.0, 0.0])
    assert torch.allclose(fuse(certain, g, 1.0, top=4), certain, atol=1e-6)  # p_max ~ 1: no change
    out = fuse(unsure, g, 2.0, top=4)
    assert int(out.argmax()) == 2  # an unsure model follows the graph


def test_graph_artifacts_and_bad_input(tiny_target, tiny_draft, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        GRAD(graph_path=str(tmp_path / "none.pt"))
    g = Graph.build(tiny_target, [[1, 2, 3, 4]])
    g.meta = {"model": identity(tiny_target)}
    g.save(tmp_path / "g.pt")
    s = GRAD(graph_path=str(tmp_path / "g.pt"))
    assert s.graph.rows == g.rows and "graph_path" in s.artifacts()
    s.setup(tiny_target)
    with pytest.raises(ConfigError, match="built with"):
        s.setup(tiny_draft)
    with pytest.raises(ConfigError, match="gives none"):
        GRAD().generate(tiny_target, [1, 2, 3], 4, torch.Generator())
