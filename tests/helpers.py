"""Task variants used by the runner tests (targets for Hydra `_target_` overrides)."""

from tasks.demo_arith import DemoArithmetic


class ReversedDemo(DemoArithmetic):
    """Same examples, opposite order: rows must not depend on example order."""

    def load(self):
        return super().load()[::-1]


class FlakyDemo(DemoArithmetic):
    """The second example's prompt raises: the run must record an error row and go on."""

    def prompt(self, example):
        if example["id"].startswith("demo_arith-0001"):
            raise RuntimeError("boom on purpose")
        return super().prompt(example)
