# sm_dream: `make demo` runs the main job on the embedded tiny default (CPU); `make test` installs and tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg setup.py scripts/install_torch.sh | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow bench replicate replicate-quick clean

install: $(STAMP)

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	scripts/install_torch.sh $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

# The tiny CPU recipe end to end: SM + DoRA finetuning for a few steps on the shipped chat file, merged
# export, then a fresh process without sm_dream loads it (trust_remote_code) and generates.
# One thread: the tiny model's small matmuls only lose from OpenMP on a busy 2-core machine.
demo: install
	rm -rf outputs/demo
	OMP_NUM_THREADS=1 $(PY) recipes/finetune_dream_coder.py --config recipes/tiny/sft_sm_tiny.yaml \
		--output_dir outputs/demo --export_dir outputs/demo/merged
	OMP_NUM_THREADS=1 $(PY) recipes/generate_standalone.py outputs/demo/merged --prompt "What is 12 plus 30?"

test: install
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

replicate: install
	$(PY) recipes/replicate_small.py --output_dir outputs/replicate_small

replicate-quick: install
	$(PY) recipes/replicate_small.py --quick --output_dir outputs/replicate_small_quick

clean:
	rm -rf $(VENV) outputs build *.egg-info src/*.egg-info
