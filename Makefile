# sm_dream: `make demo` runs the main job on the embedded tiny default (CPU); `make test` installs and tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALL_FILES := setup.cfg setup.py scripts/install.sh scripts/install_torch.sh requirements/lock.txt requirements/oldest.txt
STAMP := $(VENV)/.installed-$(shell cat $(INSTALL_FILES) | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install lock lint demo test test-slow test-latest test-oldest bench gpu-check replicate replicate-quick clean

# The reproducible path: exact versions from requirements/lock.txt (CPU torch where there is no GPU).
install: $(STAMP)

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	scripts/install.sh $(PY) lock
	rm -f $(VENV)/.installed-* && touch $@

# Refresh requirements/lock.txt to the newest releases setup.cfg allows (then run `make test`).
lock:
	PYTHON=$(PYTHON) scripts/lock.sh

# The default suite in separate environments on the newest releases setup.cfg allows, and on its lower
# bounds; then a checkpoint saved with the lock's versions must load there (trust_remote_code, without
# sm_dream) with identical logits.
test-latest test-oldest: test-%: install
	rm -rf .venv-$*
	$(PYTHON) -m venv .venv-$*
	scripts/install.sh .venv-$*/bin/python $*
	.venv-$*/bin/python -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|huggingface.hub|peft|accelerate|datasets|deepspeed|lm.eval|tokenizers|safetensors|numpy) "
	.venv-$*/bin/python -m pytest -q -m "not slow" tests
	rm -rf .carried-code && $(PY) scripts/check_carried_code.py save .carried-code
	.venv-$*/bin/python scripts/check_carried_code.py load .carried-code

# The tiny CPU recipe end to end: SM + DoRA finetuning for a few steps on the shipped chat file, merged
# export, then a fresh process without sm_dream loads it (trust_remote_code) and generates.
# One thread: the tiny model's small matmuls only lose from OpenMP on a busy 2-core machine.
demo: install
	rm -rf outputs/demo
	OMP_NUM_THREADS=1 $(PY) recipes/finetune_dream_coder.py --config recipes/tiny/sft_sm_tiny.yaml \
		--output_dir outputs/demo --export_dir outputs/demo/merged
	OMP_NUM_THREADS=1 $(PY) recipes/generate_standalone.py outputs/demo/merged --prompt "What is 12 plus 30?"

lint: install
	$(VENV)/bin/ruff check .

# Lint first, then the default suite (what CI runs).
test: lint
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

# GPU acceptance at Dream-7B shapes on one CUDA GPU, <= 8 minutes (docs/gpu_check.md); report in outputs/gpu_check.
# GPU_CHECK_ARGS="--device cpu --tiny" runs every stage on tiny shapes.
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# CLAIMS selects a subset of the paper's claims, e.g. `make replicate CLAIMS="C1 C4"` (default: all).
CLAIMS ?= C1 C2 C3 C4 C5 C6 C7 C8
replicate: install
	nice $(PY) recipes/replicate_small.py --claims $(CLAIMS) --output_dir outputs/replicate_small

replicate-quick: install
	$(PY) recipes/replicate_small.py --quick --output_dir outputs/replicate_small_quick

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .carried-code outputs build *.egg-info src/*.egg-info
