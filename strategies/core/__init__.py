"""Decoding math shared by the strategies: the Strategy contract (base), probabilities and
accept rules (probs), token trees (trees), draft proposers (drafters), test-time search (search),
n-gram language models (ngram)."""
