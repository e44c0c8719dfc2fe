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

demo: install
	$(PY) -m sm_dream.demo --output_dir outputs/demo

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
