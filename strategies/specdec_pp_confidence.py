"""SpecDec++ (Huang et al. 2024): adaptive candidate length by predicted rejection.

The draft keeps proposing while the predicted probability that at least one of the drafted
tokens is rejected, 1 - prod_i a_i, stays below `threshold` (0.3 in the paper), with K in
[k_min, k_max] = [2, 20]. The paper trains an acceptance-prediction head on the draft's hidden
states: that faithful version is `strategy=specdec_pp` (strategies/specdec_pp.py, head
trained by `python -m tools.train_acceptance_head`). THIS file is the training-free
variant, its own config `specdec_pp_confidence`: a_i = the draft's own probability of the token
it proposed (its confidence), so it needs no artifact and works with any draft. The trainer
reports both predictors' held-out AUC on the same positions. Verification is standard
speculative sampling: lossless.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.speculative import Speculative


class SpecDecPP(Speculative):
    name = "specdec_pp_confidence"

    def __init__(self, draft, threshold: float = 0.3, k_min: int = 2, k_max: int = 20, sampling=None, **drafting):
        super().__init__(draft, k=k_max, sampling=sampling, **drafting)
        if not 0 < threshold < 1 or not 1 <= k_min <= k_max:
            raise ConfigError("specdec_pp: need 0 < threshold < 1 and 1 <= k_min <= k_max")
        self.threshold, self.k_min, self.k_max = threshold, k_min, k_max

    def stopper(self, state):
        """Stop once the predicted P(some draft is rejected) = 1 - prod a_i exceeds the threshold,
        a_i = the draft's confidence in its own token: q(x), or its softmax probability at T = 0."""
        p_all = [1.0]

        def stop(i, logits, q, x, hidden):
            p_all[0] *= float(torch.softmax(logits, -1)[x]) if q is None else float(q[x])
            return i >= self.k_min and 1.0 - p_all[0] > self.threshold

        return stop
