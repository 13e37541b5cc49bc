"""Logits left on the model's device (`model.logits_on_device`, #17 item 6) and the model timer's
device synchronisation.

On this CPU-only machine the model's device IS the CPU, so these tests check the code path, the
refusals and the bookkeeping; with `HARNESS_TEST_DEVICE=cuda` on a GPU the same tests check the
logits really stay there (device asserts) and that sampling draws from the right distribution
with a generator on the device.
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.errors import ConfigError
from harness.runner import config_hash, prepare, run
from harness.store import read_rows
from strategies.core import probs as P
from strategies.core.base import SamplingParams
from strategies.core.search import Candidate, StepSampler
from strategies.greedy import Greedy
from strategies.sampling import Sampling
from tests.conftest import DEVICE, tiny_spec
from tests.fake_cuda import DeviceMix, FakeCuda
from tests.helpers import cfg_for, run_dirs


@pytest.fixture(scope="module")
def engines():
    from harness.engines.static import StaticEngine

    hf = tiny_spec("tiny-dev", seed=0).load()
    st = StaticEngine(tiny_spec("tiny-dev-s", seed=0).load().model, hf.tokenizer, "tiny-dev-s", "float32", max_len=256)
    return {"hf": hf, "static": st}


@pytest.mark.parametrize("kind", ["hf", "static"])
def test_model_timer_synchronises_at_the_outermost_call_only(engines, kind):
    """Two synchronisations per model call (its start and its end), none for the nested modules
    (layers, norm, head): the hooks nest ~8 deep here. Without them a GPU's asynchronous kernels
    would be charged to whatever waits next (the harness)."""
    eng = engines[kind]
    calls = []
    old = eng._timing.sync
    eng._timing.sync = lambda: calls.append(eng._timing.depth)
    try:
        eng.reset()
        eng.forward([1, 2, 3, 4])
        assert len(calls) == 2
        fork = eng.fork([5, 6, 7], [[8], [9, 10]])
        calls.clear()
        fork.step([11, 12])
        assert len(calls) == 2
    finally:
        eng._timing.sync = old
    assert (old is None) == (torch.device(DEVICE).type != "cuda")  # only a GPU is synchronised


@pytest.mark.parametrize("kind", ["hf", "static"])
def test_logits_stay_on_the_device_and_equal_the_copied_ones(engines, kind):
    eng = engines[kind]
    eng.reset()
    cpu = eng.forward([1, 2, 3, 4, 5])
    cpu_fork = eng.fork([1, 2, 3], [[4], [4, 5]]).logits
    eng.logits_on_device(True)
    try:
        assert eng.logits_device == eng.device
        eng.reset()
        dev = eng.forward([1, 2, 3, 4, 5])
        fork = eng.fork([1, 2, 3], [[4], [4, 5]])
        dev_fork = fork.logits
        assert dev.device.type == dev_fork.device.type == eng.device.type and dev.dtype == torch.float32
        assert cpu.device.type == cpu_fork.device.type == "cpu"
        torch.testing.assert_close(dev.cpu(), cpu)
        torch.testing.assert_close(dev_fork.cpu(), cpu_fork)
        fork.step([6, 7])
        fork.select([1])
        assert fork.logits.device.type == eng.device.type and fork.logits.shape[0] == 1
    finally:
        eng.logits_on_device(False)
    assert eng.logits_device == torch.device("cpu")


@pytest.mark.parametrize("kind", ["hf", "static"])
def test_greedy_and_batched_sampling_run_on_device_logits(engines, kind):
    """Greedy is the same token sequence either way; StepSampler's rows draw from device logits
    with a device generator (on the CPU: the very same rows as with copied logits)."""
    eng = engines[kind]
    sp = SamplingParams(temperature=1.0, top_p=0.9)

    def both():
        g = Greedy().generate(eng, [1, 2, 3], 12, torch.Generator(device=eng.logits_device).manual_seed(0)).tokens
        s = StepSampler(eng, sp)
        eng.reset()
        rows = s.extend([1, 2, 3], [Candidate()] * 4, torch.Generator(device=eng.logits_device).manual_seed(5),
                        10, whole=True)
        return g, [c.tokens for c in rows]

    g_cpu, rows_cpu = both()
    eng.logits_on_device(True)
    try:
        g_dev, rows_dev = both()
    finally:
        eng.logits_on_device(False)
    assert g_dev == g_cpu and len(g_cpu) == 12
    assert all(1 <= len(r) <= 10 for r in rows_dev)
    if torch.device(DEVICE).type == "cpu":
        assert rows_dev == rows_cpu


def test_sampling_with_a_device_generator_draws_the_right_distribution(small_models):
    """V = 4, one next-token distribution, 8,000 draws through the sampler with the logits and the
    generator on the device: every frequency within 4.5 sigma of process()'s probability."""
    target, _ = small_models
    target.logits_on_device(True)
    try:
        target.reset()
        logits = target.forward([1, 2, 3], last_only=True)
        assert logits.device.type == target.device.type
        sp = SamplingParams(temperature=1.0, top_p=0.85)
        p = sp.probs(logits).cpu()
        rng = torch.Generator(device=target.logits_device).manual_seed(0)
        n = 8000
        draws = P.sample_rows(logits.expand(n, -1).contiguous(), rng, 1.0, 0, 0.85).cpu()
        one = [Sampling(sp).sampling.next_token(logits, rng) for _ in range(400)]
    finally:
        target.logits_on_device(False)
    freq = torch.bincount(draws, minlength=4).double() / n
    sigma = (p.double() * (1 - p.double()) / n).sqrt()
    assert (p > 0.05).sum() >= 2  # an asymmetric, non-degenerate case
    assert bool(((freq - p.double()).abs() <= 4.5 * sigma + 1e-9).all()), (freq, p)
    assert all(p[t] > 0 for t in one)  # the one-token path never draws outside the nucleus


def test_runner_rows_on_device_logits_and_the_identity(tmp_path):
    over = ("task.limit=3", "strategy=sampling", "strategy.sampling.temperature=1.0", f"model.device={DEVICE}")
    run(cfg_for(tmp_path / "a", *over))
    run(cfg_for(tmp_path / "b", *over, "model.logits_on_device=true"))
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    ra, rb = read_rows(a / "rows.jsonl"), read_rows(b / "rows.jsonl")
    assert [r["rng_device"] for r in ra] == ["cpu"] * 3
    assert [r["rng_device"] for r in rb] == [str(torch.device(DEVICE))] * 3 and all(not r["error"] for r in rb)
    if torch.device(DEVICE).type == "cpu":  # same generator, same logits: the same rows
        assert [r["output_tokens"] for r in ra] == [r["output_tokens"] for r in rb]
    assert ra[0]["config_hash"] != rb[0]["config_hash"]  # a different sampler's generator: another run
    meta = json.loads((b / "meta.json").read_text())
    assert "logits_on_device" in json.dumps(meta)


def test_default_placement_keeps_the_old_config_hash(tmp_path):
    cfg = cfg_for(tmp_path)
    h = config_hash(cfg)
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        del cfg.model["logits_on_device"]  # a config from before the option
    assert config_hash(cfg) == h
    OmegaConf.update(cfg, "model.logits_on_device", True, force_add=True)
    assert config_hash(cfg) != h


def test_a_strategy_that_opts_out_is_refused_before_models_load(tmp_path, monkeypatch):
    from strategies.speculative import Speculative

    monkeypatch.setattr(Speculative, "device_logits", False)
    with pytest.raises(ConfigError, match="speculative does its arithmetic on CPU copies.*logits_on_device=false"):
        prepare(cfg_for(tmp_path, "strategy=speculative", "model.logits_on_device=true"))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    prepare(cfg_for(tmp_path, "strategy=speculative", "model@strategy.draft=tiny_random"))  # the default placement: accepted


def test_a_draft_on_another_device_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="draft's logits follow the target's"):
        prepare(cfg_for(tmp_path, "strategy=speculative", "model@strategy.draft=tiny_random", "model.logits_on_device=true",
                        "strategy.draft.device=auto"))


# ---------------------------------------------------------------------- a fake GPU on the CPU
def test_the_fake_device_raises_where_a_gpu_would():
    """tests/fake_cuda.py must be able to fail: each placement error a GPU raises, raised here."""
    with FakeCuda() as m:
        x = torch.randn(5).to("cuda")
        assert x.device.type == "cuda" and (x * 2).device.type == "cuda" and x.cpu().device.type == "cpu"
        assert (x + torch.tensor(1.0)).device.type == "cuda"  # a CPU scalar is fine
        assert x[torch.tensor([0, 2])].device.type == "cuda"  # CPU indices are fine
        assert torch.arange(5, device=x.device).device.type == "cuda"
        for bad in (lambda: x + torch.ones(5), lambda: torch.cat([x, torch.ones(2)]),
                    lambda: x.gather(0, torch.tensor([0])), lambda: x.numpy(),
                    lambda: torch.multinomial(torch.softmax(x, -1), 1, generator=torch.Generator()),
                    lambda: torch.rand(3, generator=m.cuda_generator(1)),
                    lambda: P.residual(torch.softmax(x, -1), torch.softmax(torch.randn(5), -1))):
            with pytest.raises(DeviceMix):
                bad()
        g = m.cuda_generator(0)
        assert torch.multinomial(torch.softmax(x, -1), 1, generator=g).device.type == "cuda"


@pytest.fixture
def fake_gpu_runner(monkeypatch):
    """The runner on a fake GPU: engines put their logits 'on cuda' and the example's generator
    is registered as a cuda one with the current FakeCuda mode."""
    import harness.runner as R
    from harness.engines.hf import HFEngine

    modes = []

    def around():
        modes.append(FakeCuda())
        return modes[-1]

    def on(self, flag=True):
        self.logits_device = torch.device("cuda") if flag else torch.device("cpu")
        self._prefix = None

    def gen(device, seed):
        return modes[-1].cuda_generator(seed) if device == "cuda" else torch.Generator().manual_seed(seed)

    monkeypatch.setattr(HFEngine, "logits_on_device", on)
    monkeypatch.setattr(R, "make_generator", gen)
    return around, modes


def test_every_strategy_keeps_its_golden_rows_with_logits_on_a_fake_gpu(fake_gpu_runner):
    """Every autoregressive strategy's golden cases (tests/golden.py: T = 0 and T = 1, perfect and
    1-layer drafts, a peaked model) through the runner with model.logits_on_device=true, the
    logits and the generator on a fake CUDA device: no placement error (a GPU would raise one)
    and the SAME rows as recorded on the CPU (the fake computes on the CPU, same seeds)."""
    from tests import golden
    from tests.test_golden_rows import _diff

    around, modes = fake_gpu_runner
    got = golden.collect(extra=("model.logits_on_device=true",), around=around)
    want = {k: v for k, v in json.loads(golden.GOLDEN.read_text()).items() if k in got}
    assert len(got) >= 100 and set(got) == set(want)
    errors = [f"{k}: {r['error']}" for k, rows in got.items() for r in rows if r.get("error")]
    assert not errors, "\n".join(errors[:10])
    bad = _diff(want, got)
    assert not bad, "\n".join(bad[:20])
    assert sum(m.ops > 0 for m in modes) >= len(modes) - 2  # the logits were followed (nbest_first reads none)


@pytest.mark.parametrize("over", [
    ("strategy=speculative", "strategy.draft_vocab=64", "strategy.draft_lookup=2", "strategy.sampling.temperature=1.0"),
    ("strategy=speculative", "strategy.draft_vocab=64", "strategy.draft_lookup=2"),
    ("strategy=dyspec", "strategy.draft_vocab=64", "strategy.sampling.temperature=1.0"),
    ("strategy=best_of_n", "scorer@strategy.scorer=lm_judge", "strategy.sampling.temperature=1.0"),
])
def test_drafting_options_and_scorers_on_a_fake_gpu(tmp_path, fake_gpu_runner, over):
    """Paths the golden cases do not take (a restricted draft head, the draft's own lookup, a
    judge scorer): rows on the fake GPU == rows with CPU logits."""
    around, _ = fake_gpu_runner
    common = ("task.limit=2", "model@strategy.draft=tiny_random", "strategy.draft.truncate_layers=1") \
        if "best_of_n" not in over[0] else ("task.limit=2",)
    run(cfg_for(tmp_path / "cpu", *common, *over))
    with around():
        run(cfg_for(tmp_path / "gpu", *common, *over, "model.logits_on_device=true"))
    (a,), (b,) = run_dirs(tmp_path / "cpu"), run_dirs(tmp_path / "gpu")
    ra, rb = read_rows(a / "rows.jsonl"), read_rows(b / "rows.jsonl")
    assert not any(r["error"] for r in rb), [r["error"] for r in rb]
    assert [r["rng_device"] for r in rb] == ["cuda"] * 2
    key = ("output_tokens", "target_forwards", "draft_forwards", "accepted", "drafted", "extra")
    assert [{k: r.get(k) for k in key} for r in ra] == [{k: r.get(k) for k in key} for r in rb]


@pytest.mark.parametrize("kind", ["hf", "static"])
def test_every_logits_path_honours_the_logits_device(engines, kind):
    """With only the CPU here, point `logits_device` at PyTorch's meta device (the model still
    runs on the CPU): every logits tensor the engine hands out must land there, so a path that
    still copies to the CPU (forward, restricted head, the fork's prompt logits, step, feed,
    select) fails on this machine too, not only on a GPU."""
    eng = engines[kind]
    eng.reset()
    eng.logits_device = torch.device("meta")
    try:
        assert eng.forward([1, 2, 3]).device.type == "meta"
        assert eng.forward([4], last_only=True).device.type == "meta"
        eng.restrict_head([1, 2, 5, 9])
        try:
            assert eng.forward([5]).device.type == "meta"
        finally:
            eng.restrict_head(None)
        fork = eng.fork([1, 2, 3], [[4], [4, 5]])
        assert fork.logits.device.type == "meta"
        assert fork.step([6, 7]).device.type == "meta"
        assert fork.feed([[1, 2], [3]]).device.type == "meta" and fork.logits.device.type == "meta"
        fork.select([1, 1])
        assert fork.logits.device.type == "meta" and fork.logits.shape[0] == 2
    finally:
        eng.logits_on_device(False)


# the strategies that run from token ids alone (the others need a task's documents, N-best lists
# or chat messages: the golden-case replay above covers them through the runner)
DIRECT = ["greedy", "sampling", "top_h", "pld", "speculative", "smartspec", "specdec_pp_confidence", "dyspec", "rsd",
          "rsd_sbs", "spectr", "s2d", "ead", "del_exit", "lud", "stand", "token_recycling", "superposed", "beam",
          "diverse_beam", "adadec", "best_of_n", "a_star", "prm_beam_search", "dvts", "particle_filtering", "ffs",
          "infalign_bon"]


def _strategy(name: str, temperature: float):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tests.conftest import ROOT

    text = (ROOT / "conf" / "strategy" / f"{name}.yaml").read_text()
    over = [f"strategy={name}", "model=tiny_random"]
    if "/model@draft" in text:
        over += ["model@strategy.draft=tiny_random", "strategy.draft.truncate_layers=1"]
    if "temperature:" in text:
        over += [f"strategy.sampling.temperature={temperature}"]
    if name == "adadec":
        over += ["strategy.threshold_path=null", "strategy.threshold=0.5"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return instantiate(compose("config", overrides=over).strategy, _convert_="all")


@pytest.mark.parametrize("kind", ["hf", "static"])
@pytest.mark.parametrize("name", DIRECT)
def test_model_and_logits_on_a_fake_gpu(name, kind, peaked_target):
    """The whole model 'on cuda' (parameters and buffers tagged, every op of every forward checked:
    masks, positions, KV buffers, rotary tables, embeddings) with its logits there too, on both
    engines, at T = 0 and T = 1: no placement error and the same tokens as on the CPU."""
    from harness.engines import HFEngine
    from harness.engines.static import StaticEngine

    src = peaked_target.model
    cls, kw = (HFEngine, {}) if kind == "hf" else (StaticEngine, {"max_len": 256})
    draft_src = tiny_spec("tiny-fake-draft", seed=0, init_std=1.0, num_hidden_layers=1).load().model
    for t in (0.0, 1.0):
        try:
            _strategy(name, t)
        except Exception as e:  # deterministic methods refuse T > 0 (Hydra wraps the ConfigError)
            if "ConfigError" in repr(e) and t > 0:
                continue
            raise

        def go(fake: bool):
            s = _strategy(name, t)  # a fresh instance: no table carried between the two runs
            m = FakeCuda(skip_model=False) if fake else None
            with (m if fake else torch.inference_mode()):
                if fake:
                    m.place(src)
                    m.place(draft_src)
                eng = cls(src, peaked_target.tokenizer, "t", "float32", **kw)
                dr = cls(draft_src, peaked_target.tokenizer, "d", "float32", **kw) if s.draft is not None else None
                try:
                    for e in (eng, dr):
                        if e is not None:
                            e._timing.sync = None  # (a fake GPU has nothing to synchronise)
                            e.logits_on_device(fake)
                    g = m.cuda_generator(3) if fake else torch.Generator().manual_seed(3)
                    s.setup(eng, dr)
                    toks = s.generate(eng, [1, 2, 3, 1, 2, 3, 1, 2, 3, 4], 10, g, draft=dr).tokens
                finally:
                    for e in (eng, dr):
                        if e is not None:
                            e._timing.remove()
            if fake:
                assert m.ops > 0
            return toks
        assert go(True) == go(False), (name, t)
