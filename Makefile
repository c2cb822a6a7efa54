# Two commands on a fresh machine (Python >= 3.10):
#   make quickstart   create .venv if missing, install tdaeval, run `tdaeval quickstart`
#   make test         create .venv if missing, install with the test and docs extras,
#                     lint (ruff), run the tests (the slow ones as a second step) and
#                     build the docs with warnings as errors
#   make test-fast    the same venv; only the tests not marked slow (about 2 minutes;
#                     test-quick is the older name)
#   make lint         ruff check of the package, tests, tutorials and benchmarks
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch. The project itself only asks for torch>=2.2 (pyproject.toml, TORCH_RANGE); make
# installs TORCH_SPEC, from pip's configured index unless TORCH_INDEX is set.
# From PyPI a plain torch==2.13.0 on Linux is the CUDA build (several GB with its
# nvidia-* wheels); for the CPU build use PyTorch's CPU index:
#   make quickstart TORCH_INDEX=https://download.pytorch.org/whl/cpu
# TORCH_INDEX reaches pip as --index-url where torch is installed alone and as
# --extra-index-url where it is installed beside other packages. A torch that is
# already in the venv and satisfies torch>=2.2 is kept, never reinstalled.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# the older name of TORCH_SPEC
ifdef TORCH_PIN
TORCH_SPEC := $(TORCH_PIN)
endif
TORCH_RANGE := >=2.2
TORCH_INDEX_URL = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
TORCH_EXTRA_INDEX_URL = $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# Prints torch==<version> when the venv has a torch (its installed metadata, read without
# importing torch) that satisfies TORCH_RANGE; nothing otherwise.
INSTALLED_TORCH = $(BIN)/python -c "from importlib.metadata import version; from pip._vendor.packaging.specifiers import SpecifierSet; v = version('torch'); print('torch==' + v if SpecifierSet('$(TORCH_RANGE)').contains(v, prereleases=True) else '')" 2>/dev/null

.PHONY: quickstart lint test test-fast test-quick test-quanda test-peft docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	test -n "$$($(INSTALLED_TORCH))" || $(BIN)/python -m pip install --quiet $(TORCH_INDEX_URL) "$(TORCH_SPEC)" || echo "($(TORCH_SPEC) not available here; pip resolves torch$(TORCH_RANGE) instead)"

# The torch pin (the installed torch when it is kept, else TORCH_SPEC) goes on the
# same command line so that the dependencies, and the adapters' libraries
# (kronfluence pulls torchvision), resolve against it rather than upgrade it.
$(VENV)/.installed-core: $(BIN)/python pyproject.toml
	torch="$$($(INSTALLED_TORCH))"; $(BIN)/python -m pip install --quiet -e . "$${torch:-$(TORCH_SPEC)}" $(TORCH_EXTRA_INDEX_URL) || $(BIN)/python -m pip install --quiet -e . $(TORCH_EXTRA_INDEX_URL)
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	torch="$$($(INSTALLED_TORCH))"; $(BIN)/python -m pip install --quiet -e ".[test,docs]" "$${torch:-$(TORCH_SPEC)}" $(TORCH_EXTRA_INDEX_URL) || $(BIN)/python -m pip install --quiet -e ".[test,docs]" $(TORCH_EXTRA_INDEX_URL)
	touch $@

quickstart: $(VENV)/.installed-core
	$(BIN)/tdaeval quickstart

# The rules are in pyproject.toml ([tool.ruff]).
lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check tdaeval tests tutorials benchmarks

# Tests marked slow (the tutorials, the kill -9 and concurrent-shard tests, the longest
# retraining tests) run as their own step, so that their output and timings show separately.
test: lint test-fast
	$(BIN)/python -m pytest -m slow
	$(MAKE) docs

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow"

test-quick: test-fast

# Quanda 0.5.0 needs torch 2.14.1 + torchvision 0.29.1 and numpy 2 against
# captum's declared numpy<2, so its adapter tests run in a venv of their own
# (docs/adapters/quanda.rst); `make test` skips them when quanda is missing.
QUANDA_VENV ?= .venv-quanda
test-quanda:
	test -x $(QUANDA_VENV)/bin/python || $(PYTHON) -m venv $(QUANDA_VENV)
	$(QUANDA_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(QUANDA_VENV)/bin/python -m pip install --quiet -e ".[quanda,test]" omegaconf torch==2.14.1 torchvision==0.29.1
	$(QUANDA_VENV)/bin/python -m pip install --quiet --no-deps "numpy>=2"
	$(QUANDA_VENV)/bin/python -m pytest -p no:cacheprovider tests/attributors/adapters/test_quanda.py tests/attributors/test_base.py -k quanda
	$(QUANDA_VENV)/bin/python -m pytest -p no:cacheprovider tests/metrics/test_quanda_metrics.py
	$(QUANDA_VENV)/bin/python -m pytest -p no:cacheprovider tests/metrics/test_fact_tracing.py -k quanda

# peft imports transformers, which imports torchvision, which does not import
# beside the CPU torch 2.13.0 build: the LoRA ensemble's peft test runs in its own venv.
PEFT_VENV ?= .venv-peft
test-peft:
	test -x $(PEFT_VENV)/bin/python || $(PYTHON) -m venv $(PEFT_VENV)
	$(PEFT_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PEFT_VENV)/bin/python -m pip install --quiet -e ".[lora,test]" torch==2.14.1 torchvision==0.29.1
	$(PEFT_VENV)/bin/python -m pytest -p no:cacheprovider tests/attributors/test_ensembles.py

docs: $(VENV)/.installed-test
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_lds.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_quickstart.py
	$(BIN)/python benchmarks/bench_grad_dot.py
	$(BIN)/python benchmarks/bench_influence_cg.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_ensembles.py
	$(BIN)/python benchmarks/bench_further_training.py
	$(BIN)/python benchmarks/bench_mislabel.py
	$(BIN)/python benchmarks/bench_large_n.py
	$(BIN)/python benchmarks/bench_executors.py
	$(BIN)/python benchmarks/bench_tail_patch.py
	$(BIN)/python benchmarks/bench_lm.py
	$(BIN)/python benchmarks/bench_tail_patch.py --task language_model

clean:
	rm -rf $(VENV) $(QUANDA_VENV) $(PEFT_VENV) docs/_build tdaeval-out .pytest_cache
