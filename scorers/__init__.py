"""Step scorers for test-time search (mirrors conf/scorer/): base.py (the contract and the
step-score aggregates), lm_judge.py (the offline default), prm.py (real process reward models)."""
