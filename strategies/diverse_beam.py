"""Diverse Beam Search (Vijayakumar et al., "Diverse Beam Search: Decoding Diverse Solutions from
Neural Sequence Models", AAAI 2018, arXiv 1610.02424).

B beams are split into G groups of B / G. At every step the groups are processed in order; group
g runs an ordinary beam-search step, except that a candidate token's selection score is its
sequence log-probability MINUS lambda x (the number of beams of groups 1..g-1 that chose that
same token at this step): the Hamming diversity term. Group 1 is plain beam search; later groups
are pushed away from what earlier groups just picked. The penalty steers selection only: a
beam's stored score stays its log-probability, as the paper's objective (log-probability of the
sequence + lambda x the diversity of the current step) puts it. Length penalty and stopping as in
strategies/beam.py (transformers' rules); with G = 1 (or lambda = 0 and one group) it IS `beam`
(tests/test_beam.py). The output is the best finished hypothesis over all groups; the row keeps
every group's hypotheses, so oracle quality and diversity (distinct-n, self-BLEU) are reported.
"""

from __future__ import annotations

from strategies.beam import Beam


class DiverseBeam(Beam):
    name = "diverse_beam"

    def __init__(self, beams: int = 6, groups: int = 3, diversity: float = 0.5, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, sampling=None):
        super().__init__(beams=beams, groups=groups, diversity=diversity, length_penalty=length_penalty,
                         early_stopping=early_stopping, sampling=sampling)
