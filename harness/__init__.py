"""A reproducible benchmark harness for LLM decoding strategies."""

__version__ = "0.1.0"
