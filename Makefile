# One place for set-up, tests and the main job. Every target builds the venv it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Offline by default: the tests never touch the network (the Hub is not needed).
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: venv test lint speedrun clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch: the CPU wheel pinned for these machines, unless some torch is already installed.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,eval,serve,dev]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(TEST_ENV) $(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

speedrun: venv
	$(PY) training/speedrun.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
