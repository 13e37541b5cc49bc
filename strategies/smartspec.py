"""SmartSpec: goodput-optimal speculation length (Liu et al. 2024, "Optimizing Speculative
Decoding for Serving Large Language Models Using Goodput").

Before each step choose K in {0, ..., k_max} maximising

    goodput(K) = E[tokens | K, alpha] / step_time(K),   E = (1 - alpha^(K+1)) / (1 - alpha)

alpha = this request's acceptance rate so far (Beta prior: `prior_accept` of `prior_weight`
drafted tokens), step_time(K) = K * draft_token_s + target_a + target_b * (K + 1), a linear model
of the target's cost in verified tokens plus the draft's cost per token. K = 0 is plain
decoding: speculation switches itself off where it would lose. Lossless whatever K is chosen
(standard verification).

The step-time model is an explicit INPUT, never measured during a run (a run that timed its
own forwards would choose other K's, and so write other rows, on a busier machine): either
coefficients in the YAML (`step_model`) or a profile file (`step_profile`) written once by

    python -m tools.profile_smartspec --out results/profiles/NAME.json [hydra overrides, e.g. model=...]

which times target forwards of 1 and 8 tokens and a 1-token draft forward on this machine. The
file's sha256 is part of the run's identity (harness/runner.py hashes every strategy artifact)
and the coefficients are in every row. Same config + same profile -> identical rows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.speculative import Speculative

STEP_KEYS = ("target_a", "target_b", "draft_token_s")
ROOT = Path(__file__).resolve().parent.parent


def _resolve(path) -> Path:
    """A profile path as given, else relative to the repository root."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() or p.exists() else ROOT / p


def profile_models(path) -> dict:
    """{"target": name, "draft": name} a profile file was measured for."""
    obj = json.loads(_resolve(path).read_text())
    return {k: (obj.get(k) or {}).get("name") for k in ("target", "draft")}


def load_step_profile(path) -> dict:
    """The coefficients of a profile file written by `python -m tools.profile_smartspec`."""
    p = _resolve(path)
    try:
        obj = json.loads(p.read_text())
        model = {k: float(obj["step_model"][k]) for k in STEP_KEYS}
    except FileNotFoundError:
        raise ConfigError(f"smartspec: step profile {p} does not exist; write one with "
                          f"`python -m tools.profile_smartspec --out {path}` or give strategy.step_model") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"smartspec: {p} is not a step profile ({e.__class__.__name__}: {e}); "
                          f"it needs step_model.{{{', '.join(STEP_KEYS)}}}") from None
    return model


def expected_tokens(k: int, alpha: float) -> float:
    """E[tokens per step] with k drafts accepted i.i.d. with probability alpha, bonus included."""
    if alpha >= 1.0:
        return k + 1.0
    return (1 - alpha ** (k + 1)) / (1 - alpha)


class SmartSpec(Speculative):
    name = "smartspec"

    def __init__(self, draft, k_max: int = 8, prior_accept: float = 0.6, prior_weight: float = 4.0,
                 step_model: dict | None = None, step_profile: str | None = None, sampling=None, **drafting):
        super().__init__(draft, k=max(k_max, 1), sampling=sampling, **drafting)
        if k_max < 0 or not 0 < prior_accept < 1 or prior_weight < 0:
            raise ConfigError("smartspec: need k_max >= 0, 0 < prior_accept < 1, prior_weight >= 0")
        if bool(step_model) == bool(step_profile):
            raise ConfigError("smartspec: give exactly one of strategy.step_model ({target_a, target_b, "
                              "draft_token_s} in seconds) or strategy.step_profile (a file written by "
                              "`python -m tools.profile_smartspec --out FILE`)")
        self.k_max, self.prior_accept, self.prior_weight = k_max, prior_accept, prior_weight
        self.step_profile = str(step_profile) if step_profile else ""
        if step_model:
            missing = [k for k in STEP_KEYS if k not in step_model]
            if missing or any(float(v) < 0 for v in step_model.values()):
                raise ConfigError(f"smartspec: step_model needs non-negative {', '.join(STEP_KEYS)} (missing: "
                                  f"{', '.join(missing) or 'none'})")
            self.step_model = {k: float(step_model[k]) for k in STEP_KEYS}
        else:
            self.step_model = load_step_profile(step_profile)

    def params(self) -> dict:
        return {**super().params(), "step_model": self.step_model}

    @torch.inference_mode()
    def profile(self, target, draft, prefix: list[int], repeats: int = 3) -> dict:
        """Time target forwards of 1 and 8 new tokens after `prefix`, and a 1-token draft forward
        (median of `repeats`); fit step time = target_a + target_b * tokens."""

        def timed(engine, n):
            out = []
            for _ in range(repeats):
                engine.reset()
                engine.forward(prefix)
                t0 = time.perf_counter()
                engine.forward(prefix[:1] * n)
                out.append(time.perf_counter() - t0)
            return sorted(out)[len(out) // 2]

        t1, t8, d1 = timed(target, 1), timed(target, 8), timed(draft, 1)
        b = max((t8 - t1) / 7, 0.0)
        return {"target_a": max(t1 - b, 0.0), "target_b": b, "draft_token_s": d1}

    def setup(self, target, draft=None) -> None:
        """Say so (one line) when the profile file was measured for other models than these."""
        if self.step_profile:
            want = profile_models(self.step_profile)
            got = {"target": target.name, "draft": draft.name if draft is not None else None}
            if any(want[k] and want[k] != got[k] for k in want):
                print(f"[smartspec] WARNING: step profile {self.step_profile} was measured for target "
                      f"{want['target']} / draft {want['draft']}, running {got['target']} / {got['draft']}: "
                      f"write one for these with `python -m tools.profile_smartspec --out FILE model=...`", flush=True)

    def decode(self, state):
        super().decode(state)
        state.extra.update({f"step_model_{k}": v for k, v in self.step_model.items()})

    def draft_length(self, state) -> int:
        m, trace, remaining = self.step_model, state.trace, state.remaining
        alpha = (trace.accepted + self.prior_accept * self.prior_weight) / (trace.drafted + self.prior_weight)
        alpha = min(max(alpha, 0.0), 0.999)

        def goodput(k):
            t = k * m["draft_token_s"] + m["target_a"] + m["target_b"] * (k + 1)
            return expected_tokens(k, alpha) / t

        best = max(range(0, min(self.k_max, remaining) + 1), key=goodput)
        state.count("k_chosen", best)
        state.count("steps_without_speculation", int(best == 0))
        return best
