# One place for set-up, tests and the main job. Every target builds the venv it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS := train,eval,serve,dev,export
# The exact versions `make test` passed with: what the README's commands install (`make upgrade` refreshes it).
LOCK := requirements-lock.txt
# Offline by default: the tests never touch the network (the Hub is not needed).
TEST_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# torch: the CPU wheel pinned for these machines, unless some torch (e.g. a CUDA build) is already installed.
TORCH := torch==2.13.0
# The compatibility lanes: the declared minimums of pyproject.toml, and the newest releases.
LANE_minimum := transformers==5.23.0 trl==1.16.0 peft==0.21.0 accelerate==1.10.1
LANE_newest := --upgrade transformers trl peft accelerate

.PHONY: venv test test-fast compat upgrade lint speedrun bench bench-gpu clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH)
	$(PIP) install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(TEST_ENV) $(PY) -m pytest -q

# The tests that transformers, PEFT, TRL and lm-eval releases can break (marker `compat`), in a venv per lane.
compat: compat-minimum compat-newest

compat-%:
	@test -n "$(LANE_$*)" || { echo "no lane '$*': the lanes are minimum and newest"; exit 2; }
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -c "import torch" 2>/dev/null || .venv-$*/bin/python -m pip install -q $(TORCH)
	.venv-$*/bin/python -m pip install -q -e ".[$(EXTRAS)]" $(LANE_$*)
	.venv-$*/bin/python -c "import transformers, trl, peft, accelerate; print('lane $*: transformers', \
		transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
	$(TEST_ENV) .venv-$*/bin/python -m pytest -q -m compat
	$(MAKE) upstream-$*

# transformers' own common model tests (ModelTesterMixin) on both recipes, from the PyPI sdist of the lane's
# transformers (the sdist has no causal-LM or generation testers: tests/upstream/README.md runs those on a checkout).
upstream-%:
	V=$$(.venv-$*/bin/python -c "import transformers; print(transformers.__version__)"); D=$${TMPDIR:-/tmp}/transformers-sdist; \
	test -d $$D/transformers-$$V || { .venv-$*/bin/python -m pip download -q --no-binary :all: --no-deps \
		transformers==$$V -d $$D && tar -xzf $$D/transformers-$$V.tar.gz -C $$D; }; \
	PYTHON=.venv-$*/bin/python tests/upstream/run.sh $$D/transformers-$$V

# Install the newest releases in a fresh venv, run the whole suite there, and only if it passes write the lock.
upgrade:
	rm -rf .venv-upgrade && $(PYTHON) -m venv .venv-upgrade
	.venv-upgrade/bin/python -m pip install -q $(TORCH)
	.venv-upgrade/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	$(TEST_ENV) .venv-upgrade/bin/python -m pytest -q
	{ echo "# Written by make upgrade after the whole suite passed; make test and make speedrun install these."; \
	  echo "# torch is pinned in the Makefile (the CPU wheel) or is whatever build a GPU machine has."; \
	  .venv-upgrade/bin/python -m pip freeze --exclude-editable | grep -v -E '^(torch|nvidia-|triton|cuda-)'; \
	} > $(LOCK).new && mv $(LOCK).new $(LOCK)

# The model, config, tokenizer and other unit tests: a quick check of a change (make test runs everything).
test-fast: venv
	$(TEST_ENV) $(PY) -m pytest -q tests/model tests/train/test_budget.py tests/train/test_hardware.py \
		tests/test_compat_hooks.py

# Speed and quality per compute against the references, as ratios in one process; each script prints its
# table and writes benchmarks/results.json (about an hour on 2 CPU cores).
bench: venv
	$(TEST_ENV) $(PY) benchmarks/train_throughput.py --threads 1
	$(TEST_ENV) $(PY) benchmarks/generation.py --threads 1
	$(TEST_ENV) $(PY) benchmarks/shakespeare_char.py
	$(TEST_ENV) $(PY) benchmarks/main_job.py --time_budget 5

# The same at GPT-2 124M in bf16 on a GPU, with MFU.
bench-gpu: venv
	$(TEST_ENV) $(PY) benchmarks/train_throughput.py --device cuda --shapes gpt2 --settings bf16+compile
	$(TEST_ENV) $(PY) benchmarks/generation.py --device cuda --shapes gpt2

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

speedrun: venv
	$(PY) training/speedrun.py $(ARGS)

clean:
	rm -rf $(VENV) .venv-minimum .venv-newest .venv-upgrade outputs .pytest_cache
