"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class ConfigError(ValueError):
    """Bad configuration or input, detected before (or instead of) doing any work."""


class UndecidableComparison(RuntimeError):
    """An answer comparison could not be decided (math-verify timed out or crashed): neither
    'equal' nor 'different'. A task's score raises it (the runner writes an error row, retried by
    run.retry_errors); voting strategies count it as 'different' and report how often."""
