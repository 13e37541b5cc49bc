"""Greedy decoding: the argmax at every step. The lossless reference."""

from strategies.core.base import SamplingParams
from strategies.sampling import Sampling


class Greedy(Sampling):
    name = "greedy"

    def __init__(self):
        super().__init__(SamplingParams(temperature=0.0))
