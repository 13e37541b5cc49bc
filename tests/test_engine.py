"""The engine seam: chunked == one-by-one, tree mask == sequential, rollback == never fed."""

import torch

from harness.engines import tree_mask_4d

PROMPT = [5, 17, 99, 3, 42, 7, 250, 11]


def _sequential(engine, ids):
    engine.reset()
    return torch.stack([engine.forward([t])[0] for t in ids])


def test_chunked_forward_equals_one_by_one(tiny_target):
    seq = _sequential(tiny_target, PROMPT)
    tiny_target.reset()
    chunk = torch.cat([tiny_target.forward(PROMPT[:3]), tiny_target.forward(PROMPT[3:])])
    assert chunk.shape == (len(PROMPT), tiny_target.vocab_size)
    torch.testing.assert_close(chunk, seq, atol=2e-5, rtol=0)
    assert tiny_target.length == len(PROMPT)


def test_last_only_matches_full(tiny_target):
    tiny_target.reset()
    full = tiny_target.forward(PROMPT)
    tiny_target.reset()
    last = tiny_target.forward(PROMPT, last_only=True)
    torch.testing.assert_close(last, full[-1], atol=2e-5, rtol=0)


def test_rollback_then_refeed_equals_never_fed(tiny_target):
    tiny_target.reset()
    tiny_target.forward(PROMPT)
    tiny_target.forward([1, 2, 3])  # a rejected draft
    tiny_target.rollback(3)
    assert tiny_target.length == len(PROMPT)
    got = tiny_target.forward([77, 78])
    ref = _sequential(tiny_target, PROMPT + [77, 78])[-2:]
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)


def test_tree_mask_equals_sequential_logits_and_keep(tiny_target):
    # tree below the prefix: a -> b -> c, and a -> d (two branches), e a second root
    nodes = [10, 20, 30, 40, 50]
    parent = [-1, 0, 1, 0, -1]
    depth = torch.tensor([0, 1, 2, 1, 0])
    anc = torch.zeros(5, 5, dtype=torch.bool)
    for i in range(5):
        j = i
        while j != -1:
            anc[i, j] = True
            j = parent[j]
    tiny_target.reset()
    tiny_target.forward(PROMPT)
    tree = tiny_target.forward(nodes, tree=anc, depths=depth)
    for i in range(5):
        path, j = [], i
        while j != -1:
            path.append(nodes[j])
            j = parent[j]
        ref = _sequential(tiny_target, PROMPT + path[::-1])[-1]
        torch.testing.assert_close(tree[i], ref, atol=2e-5, rtol=0)
    # keep the branch a -> d, then continue: same as feeding the path sequentially
    tiny_target.reset()
    tiny_target.forward(PROMPT)
    tiny_target.forward(nodes, tree=anc, depths=depth)
    tiny_target.keep([0, 3], n=5)
    assert tiny_target.length == len(PROMPT) + 2
    got = tiny_target.forward([99])
    ref = _sequential(tiny_target, PROMPT + [10, 40, 99])[-1]
    torch.testing.assert_close(got[0], ref, atol=2e-5, rtol=0)


def test_tree_mask_layout():
    anc = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    m = tree_mask_4d(anc, past=3, dtype=torch.float32, device="cpu")
    assert m.shape == (1, 1, 2, 5)
    assert (m[0, 0, :, :3] == 0).all() and m[0, 0, 0, 4] < -1e30 and m[0, 0, 1, 4] == 0


def test_hidden_states_and_counters(tiny_target):
    tiny_target.reset()
    f0, t0 = tiny_target.counters()
    tiny_target.forward(PROMPT, hidden_layers=(1, tiny_target.num_layers))
    assert tiny_target.hidden[1].shape == (len(PROMPT), 64)
    assert tiny_target.counters() == (f0 + 1, t0 + len(PROMPT))
    assert {"rollback", "tree_mask", "hidden_states"} <= tiny_target.capabilities


def test_truncated_self_draft_is_prefix_of_target(tiny_target, tiny_selfdraft):
    """The truncated draft shares the target's embedding and first layer (same weights)."""
    assert tiny_selfdraft.num_layers == 1
    torch.testing.assert_close(tiny_selfdraft.model.model.embed_tokens.weight,
                               tiny_target.model.model.embed_tokens.weight)
