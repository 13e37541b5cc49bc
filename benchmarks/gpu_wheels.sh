#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the Python packages the lent GPU machine lacks or has in another
# version, for benchmarks/gpu_check.sh (#17 item 6). Run HERE (pip reaches the package index),
# then call the device with carry [".whl"]. The GPU image (2026-11) has python 3.12, torch 2.11,
# numpy, tokenizers, safetensors, tqdm, pyyaml, pytest and pytest-xdist; it lacks hydra /
# omegaconf and has an older transformers (5.17) and huggingface-hub (1.33). What travels is
# capped at 64 MiB with the working tree (~38 MB tracked), so the packages the image already
# has in a version transformers accepts are left out (~25 MB remain).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
TF=$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')
HUB=$(.venv/bin/python -c 'import huggingface_hub; print(huggingface_hub.__version__)')
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
    "transformers==$TF" "huggingface-hub==$HUB"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
    hydra-core==1.3.2 omegaconf==2.3.0
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # an sdist only: pure Python, built here
for have in numpy tokenizers safetensors pyyaml tqdm pygments rich markdown_it_py mdurl hf_xet typing_extensions \
            packaging filelock fsspec; do
    rm -f .whl/${have}-*.whl
done
ls .whl && du -sh .whl
