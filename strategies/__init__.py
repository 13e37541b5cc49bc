"""Decoding strategies: one file per method, each with a YAML in conf/strategy/."""
