# One virtualenv per set of pins, kept outside the clone (it is ~5.8 GB: torch's CUDA build).
# Every target that runs code depends on `install`, so `make demo` / `make test` work on a fresh machine.
PYTHON ?= python3
PINS   := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)
VENV   ?= $(HOME)/.cache/pipeline-venv/$(PINS)
PY     := $(VENV)/bin/python
PIPELINE := $(VENV)/bin/pipeline
PYTEST_ARGS ?=

.PHONY: help install demo test test-quick test-slurm lint bench complexity slurm-train clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(VENV)/.ready: requirements.txt requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

install: $(VENV)/.ready  ## create the virtualenv (once per pin set) and install this clone into it
	@$(PY) -I -c "import pipeline, pathlib, sys; sys.exit(pathlib.Path(pipeline.__file__).resolve() != pathlib.Path('$(CURDIR)/pipeline/__init__.py').resolve())" 2>/dev/null \
	  || $(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .

demo: install  ## the main job: embedded digits shards, φ = 0,1,2 with 2-process DDP on CPU, W&B offline
	$(PIPELINE) demo

test: install  ## ruff, then every test, slow and SLURM ones included (what CI runs)
	$(VENV)/bin/ruff check pipeline tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: install  ## the fast subset for local work (no DDP, training or SLURM tests)
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

test-slurm: install  ## only the SLURM tests: a real 2-node cluster on this machine (root; installs slurm + munge)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

lint: install  ## ruff
	$(VENV)/bin/ruff check pipeline tests bench

bench: install  ## benchmarks: ratios against their peers, measured side by side
	$(PY) -m bench

complexity: install  ## the B0–B7 complexity table
	$(PIPELINE) complexity --variant b0 b1 b2 b3 b4 b5 b6 b7

slurm-train: install  ## sbatch slurm/train.sbatch after checking the request: make slurm-train CONFIG=… NODES=1 GPUS=8
	$(PIPELINE) submit --config $(CONFIG) --nodes $(or $(NODES),1) --gpus-per-node $(or $(GPUS),1)

clean:  ## remove run outputs of this clone (not the virtualenv)
	rm -rf runs data .pytest_cache
