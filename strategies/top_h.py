"""Top-H decoding: sampling under an entropy-bounded truncation ("Top-H Decoding: Adapting the
Creativity and Coherence with Bounded Entropy in Text Generation", NeurIPS 2025, arXiv 2509.02510).

At each step the tempered distribution's 100 most probable tokens are renormalised (r) and
tokens are kept in decreasing probability while the running entropy contribution
-sum r log r stays within tau = alpha x H(r) (the most probable token is always kept); the next
token is drawn from the kept set, renormalised (strategies/core/probs.top_h_keep). Unlike top-p
and min-p, the kept set is bounded by how uncertain the distribution is, which is what keeps
text coherent at high temperature. alpha = 0.4 is the paper's value. Lossy (it is a sampler).

The transformers peer (`generate(top_h=...)`, TopHLogitsWarper) keeps the same set
(tests/test_top_h.py checks it on random logit vectors).
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.base import SamplingParams
from strategies.sampling import Sampling


class TopH(Sampling):
    name = "top_h"
    lossless = False

    def __init__(self, alpha: float = 0.4, sampling=None):
        if not isinstance(sampling, SamplingParams):  # Top-H samples: T = 1 unless given
            sampling = SamplingParams(**{"temperature": 1.0, **dict(sampling or {})})
        if not 0 < alpha <= 1:
            raise ConfigError(f"top_h: alpha must be in (0, 1], got {alpha}")
        sampling.top_h = float(alpha)
        super().__init__(sampling)
        self.alpha = float(alpha)
