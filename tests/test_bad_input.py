"""Bad input gets a one-line clear error before any model loads, and nothing written is lost."""

import hashlib
import os
import subprocess
import sys

import pytest

from harness.__main__ import precheck
from harness.errors import ConfigError
from harness.models import ModelSpec, Pack
from tests.conftest import ROOT


def runs(results):
    """Run folders (Hydra's own log folder `_hydra` aside)."""
    return [p for p in results.iterdir() if p.name != "_hydra"] if results.exists() else []


def cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr.strip()


@pytest.mark.parametrize("group,bad", [("strategy", "nope"), ("task", "gsm9k"), ("model", "gpt5")])
def test_unknown_group_option_one_line(group, bad):
    rc, out, err = cli(f"{group}={bad}")
    assert rc == 2
    assert err.count("\n") == 0 and f"unknown {group} '{bad}'" in err and "choose one of:" in err
    assert "greedy" in precheck([f"strategy={bad}"]) if group == "strategy" else True


def test_unknown_option_inside_a_sweep_and_draft_group():
    assert "unknown strategy 'bogus'" in precheck(["strategy=greedy,bogus"])
    assert "unknown model 'bogus'" in precheck(["model@strategy.draft=bogus"])
    assert precheck(["strategy=greedy,pld", "model=tiny_random", "run.seed=3"]) is None


def test_missing_data_folder(tmp_path):
    rc, out, err = cli("task=gsm8k", "model=tiny_random", f"run.results_dir={tmp_path}",
                       env_extra={"HARNESS_DATA_DIR": str(tmp_path / "nowhere")})
    assert rc == 2 and err.count("\n") == 0
    assert "data folder" in err and "not found" in err
    assert runs(tmp_path) == []  # no run folder created, no model loaded


def test_draft_with_other_vocabulary(tmp_path):
    rc, out, err = cli("strategy=speculative", "model=tiny_random", "model@strategy.draft=tiny_random",
                       "strategy.draft.tiny.vocab_size=300", "strategy.draft.truncate_layers=0",
                       "task.limit=1", f"run.results_dir={tmp_path}")
    assert rc == 2 and err.count("\n") == 0 and "different vocabularies" in err


def test_bad_values_fail_before_loading(tmp_path):
    rc, _, err = cli("strategy=speculative", "strategy.k=0", f"run.results_dir={tmp_path}")
    assert rc == 2 and "k must be >= 1" in err and err.count("\n") == 0
    rc, _, err = cli("strategy=sampling", "strategy.sampling.top_p=1.5", f"run.results_dir={tmp_path}")
    assert rc == 2 and "top_p" in err
    rc, _, err = cli("model.dtype=float8", f"run.results_dir={tmp_path}")
    assert rc == 2 and "dtype 'float8'" in err
    assert runs(tmp_path) == []


# ---------------------------------------------------------------------------- model packs
def fake_pack(tmp_path, monkeypatch, parts: dict[str, bytes], name="fakepack"):
    """An installed distribution (dist-info on sys.path) holding the given files."""
    site = tmp_path / "site"
    (site / f"{name}-0.1.dist-info").mkdir(parents=True)
    (site / f"{name}-0.1.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    record = []
    for rel, data in parts.items():
        f = site / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        record.append(f"{rel},,")
    (site / f"{name}-0.1.dist-info" / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_pack_parts_joined_in_numeric_order_and_verified(tmp_path, monkeypatch):
    chunks = {f"fakepack/data/part{i}.bin": bytes([i]) * 10 for i in range(1, 12)}
    fake_pack(tmp_path, monkeypatch, chunks)
    joined = b"".join(bytes([i]) * 10 for i in range(1, 12))  # part10, part11 after part9
    pack = Pack(distributions=["fakepack"], pattern=r"data/part(\d+)\.bin$", sha256=hashlib.sha256(joined).hexdigest())
    out = pack.materialise(tmp_path / "work")
    assert out.read_bytes() == joined


def test_corrupted_pack_part(tmp_path, monkeypatch):
    chunks = {f"fakepack/data/part{i}.bin": bytes([i]) * 10 for i in range(1, 4)}
    good = hashlib.sha256(b"".join(chunks.values())).hexdigest()
    site = fake_pack(tmp_path, monkeypatch, chunks)
    (site / "fakepack/data/part2.bin").write_bytes(b"\x00" * 10)  # bit rot / a bad upload
    pack = Pack(distributions=["fakepack"], pattern=r"data/part(\d+)\.bin$", sha256=good, install_hint="pip install x")
    with pytest.raises(ConfigError, match="sha256 mismatch") as e:
        pack.materialise(tmp_path / "work")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "work" / "joined.gguf").exists()


def test_missing_pack_distribution():
    with pytest.raises(ConfigError, match="not installed.*make packs-qwen"):
        Pack(distributions=["no-such-dist-xyz"], pattern="x", sha256="0", install_hint="make packs-qwen").part_files()


def test_model_spec_needs_exactly_one_source():
    with pytest.raises(ConfigError, match="exactly one"):
        ModelSpec(name="x")
    with pytest.raises(ConfigError, match="exactly one"):
        ModelSpec(name="x", hub_id="a/b", tiny={"vocab_size": 8})
