"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class ConfigError(ValueError):
    """Bad configuration or input, detected before (or instead of) doing any work."""
