# Two commands on a fresh machine (Python >= 3.10):
#   make quickstart   create .venv if missing, install tdaeval, run `tdaeval quickstart`
#   make test         create .venv if missing, install with the test and docs extras,
#                     run the tests and build the docs with warnings as errors
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch avoids the multi-GB CUDA wheel on CPU machines; the
# project's own requirement stays the plain range torch>=2.2.
TORCH_PIN ?= torch==2.13.0

.PHONY: quickstart test test-quanda test-peft docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)" || echo "($(TORCH_PIN) not available here; pip resolves torch>=2.2 instead)"

$(VENV)/.installed-core: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The torch pin goes on the same command line so that the adapters' libraries
# (kronfluence pulls torchvision) resolve against it rather than upgrade it.
$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,docs]" "$(TORCH_PIN)" || $(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

quickstart: $(VENV)/.installed-core
	$(BIN)/tdaeval quickstart

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest
	$(MAKE) docs

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

clean:
	rm -rf $(VENV) $(QUANDA_VENV) $(PEFT_VENV) docs/_build tdaeval-out .pytest_cache
