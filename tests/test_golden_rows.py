"""Behaviour is unchanged by refactoring: every strategy's rows (outputs and counters) on tiny
models with fixed seeds equal the golden rows recorded before the decoding-seam redesign
(tests/golden.py records them; tests/golden/rows.json holds them)."""

import json

import pytest

from tests import golden


@pytest.fixture(scope="module")
def recorded():
    return json.loads(golden.GOLDEN.read_text())


def _diff(want: dict, got: dict) -> list[str]:
    out = []
    for key in sorted(set(want) | set(got)):
        if key not in got:
            out.append(f"{key}: missing now")
        elif key not in want:
            out.append(f"{key}: new case (re-record with python -m tests.golden --write)")
        elif want[key] != got[key]:
            for i, (a, b) in enumerate(zip(want[key], got[key])):
                fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
                if fields:
                    out.append(f"{key} row {i}: " + ", ".join(f"{f} {a.get(f)!r} -> {b.get(f)!r}" for f in fields)[:400])
    return out


def test_runner_rows_equal_the_golden_rows(recorded):
    got = golden.collect()
    want = {k: v for k, v in recorded.items() if not k.startswith("direct:")}
    bad = _diff(want, got)
    assert not bad, "\n".join(bad[:20])


def test_model_free_traces_equal_the_golden_traces(recorded):
    got = golden.collect_direct()
    want = {k: v for k, v in recorded.items() if k.startswith("direct:")}
    bad = _diff(want, got)
    assert not bad, "\n".join(bad[:20])
