# The heavy dependencies live in one virtualenv per set of pins, kept outside the clone (~5.8 GB:
# torch's CUDA build) and shared by every clone on the machine; its path carries the pins' hash, so
# a change of pins makes a new one. Each clone gets a small .venv of its own that sees those packages
# and holds this clone's editable install, so two clones never re-point each other's `pipeline`.
# Every target that runs code depends on `install`: `make demo` / `make test` work on a fresh machine.
PYTHON ?= python3
PINS   := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)
DEPS   ?= $(HOME)/.cache/pipeline-venv/$(PINS)
VENV   := $(CURDIR)/.venv
PY     := $(VENV)/bin/python
PIPELINE := $(VENV)/bin/pipeline
PYTEST_ARGS ?=

# Sweeps: on the embedded digits by default; any dataset with SWEEP_CONFIG=… DATA=<shard dir>.
SWEEP_CONFIG ?= configs/experiment/digits.yaml
DATA   ?= data/digits
GRID   ?= grid
SCALE  ?= scale
PHI    ?= 0..2
STRATEGIES ?= dWr
SCALES ?= 2,4
SWEEP_ARGS ?=
FIT_ARGS ?=
BENCH_SCALE ?= 1
BENCH_DIR ?= /tmp/bench-scale
REPORT ?= $(wildcard runs/$(GRID) runs/$(SCALE))

.PHONY: help install demo digits sweep-grid sweep-scale report transfer-cifar100 transfer-flowers102 test test-quick \
        test-slurm lint bench bench-scale gpu-check complexity slurm-train clean

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

# No prerequisites on purpose: the pins' hash is in the path (file times differ in every fresh clone).
$(DEPS)/.ready:
	rm -rf $(DEPS)
	$(PYTHON) -m venv $(DEPS)
	$(DEPS)/bin/pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

$(VENV)/.ready: $(DEPS)/.ready pyproject.toml
	rm -rf $(VENV)
	$(DEPS)/bin/python -m venv --without-pip $(VENV)
	echo "import site; site.addsitedir('$$($(DEPS)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pipeline-deps.pth"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.ready  ## create the shared dependency virtualenv (once per pin set) and this clone's .venv

demo: install  ## a miniature study: digits, compound φ = 0,1,2 and dWr at the same flops (2-process DDP), report
	$(PIPELINE) demo

digits: install  ## the embedded digits shards in data/digits (once)
	test -f data/digits/manifest.json || $(PIPELINE) shards digits --out data/digits

sweep-grid: install $(if $(filter data/digits,$(DATA)),digits)  ## α, β, γ grid at 2× the base's flops: runs/$(GRID)
	$(PIPELINE) sweep grid --config $(SWEEP_CONFIG) --name $(GRID) $(SWEEP_ARGS) \
	  -- --data.root $(DATA) $(if $(filter data/digits,$(DATA)),--model.base_resolution 128) $(FIT_ARGS)

sweep-scale: install $(if $(filter data/digits,$(DATA)),digits)  ## compound φ=$(PHI) + $(STRATEGIES) at s=$(SCALES): runs/$(SCALE)
	$(PIPELINE) sweep scale --config $(SWEEP_CONFIG) --name $(SCALE) --phi $(PHI) --strategy $(STRATEGIES) \
	  --scale $(SCALES) $(SWEEP_ARGS) -- --data.root $(DATA) $(FIT_ARGS)

report: install  ## report.md/html of the finished sweeps (default runs/$(GRID) runs/$(SCALE))
	$(PIPELINE) report $(REPORT)

test: install  ## ruff, then every test, slow and SLURM ones included (what CI runs)
	$(DEPS)/bin/ruff check pipeline tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: install  ## the fast subset for local work (no DDP, training or SLURM tests)
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

test-slurm: install  ## only the SLURM tests: a real 2-node cluster on this machine (root; installs slurm + munge)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)

lint: install  ## ruff
	$(DEPS)/bin/ruff check pipeline tests bench

bench: install  ## benchmarks: ratios against their peers, measured side by side (bench-scale apart: ~45 min, 15 GB)
	$(PY) -m bench $(filter-out scale,$(patsubst bench/bench_%.py,%,$(wildcard bench/bench_*.py)))

bench-scale: install  ## ImageNet-size figures beside 1/10 of them (~17 GB under BENCH_DIR; BENCH_SCALE=0.1 for 1/10)
	$(PY) -m bench.bench_scale --scale $(BENCH_SCALE) --work $(BENCH_DIR)

# A torch-only GPU machine lacks wheels (webdataset, jsonargparse, DALI): ../shared/tools/device-wheels.sh fetches
# them where the network is; without DALI, GPU_CHECK_ARGS=--no-dali leaves its rows out.
GPU_CHECK_ARGS ?=
gpu-check: install  ## every GPU claim (fit with gpu.yaml, B0 throughput, DALI) in one table, < 8 min; no CUDA: one line
	$(PY) -m bench.gpu_check $(GPU_CHECK_ARGS)

complexity: install  ## the B0–B7 complexity table
	$(PIPELINE) complexity --variant b0 b1 b2 b3 b4 b5 b6 b7

slurm-train: install  ## sbatch slurm/train.sbatch after checking the request: make slurm-train CONFIG=… NODES=1 GPUS=8
	$(PIPELINE) submit --config $(CONFIG) --nodes $(or $(NODES),1) --gpus-per-node $(or $(GPUS),1)

transfer-cifar100: install  ## fine-tune every point of a finished sweep on CIFAR-100: make transfer-cifar100 FROM=runs/<sweep>
	$(PIPELINE) sweep transfer --from $(FROM) --dataset cifar100

transfer-flowers102: install  ## the same on Flowers-102 (train+val, test): make transfer-flowers102 FROM=runs/<sweep>
	$(PIPELINE) sweep transfer --from $(FROM) --dataset flowers102

clean:  ## remove run outputs of this clone (not the virtualenv)
	rm -rf runs data .pytest_cache
