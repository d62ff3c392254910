# Set-up and entry points. `make demo` and `make test` install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch for machines without a GPU; GPU users: make TORCH="torch" (or their CUDA build).
TORCH ?= torch==2.13.0
# The versions installed: the newest releases the ranges allow (test-oldest: their lower bounds).
CONSTRAINTS ?= constraints/newest.txt
# A lock installed after that without dependency resolution (make test-engines: constraints/engines.txt).
ENGINES ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-distributed test-engines test-slurm test-oldest gpu-check lint clean

$(STAMP): pyproject.toml $(CONSTRAINTS) $(ENGINES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[dev]"
	$(if $(ENGINES),$(BIN)/python -m pip install --quiet --no-deps -r $(ENGINES))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/wrpo demo --output demo-output

# DeepSpeed compiles its CPU communication kernel on first use into torch's extension cache; one cache
# per venv, or the oldest run loads the kernel the newest DeepSpeed built (or the other way round).
# make test: every tier but `distributed` (several processes under accelerate launch, minutes on 2 cores),
# `engines` (vLLM) and `slurm` (a Slurm cluster on loopback; root, apt-get), which make test-distributed,
# make test-engines, make test-slurm and CI run; make test-oldest runs the others on the oldest versions.
TIERS ?= not distributed and not engines and not slurm
test: $(STAMP)
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch-extensions $(BIN)/python -m pytest -q -m "$(TIERS)"

test-distributed:
	$(MAKE) test TIERS=distributed

# The vllm backend and `vllm serve` on vLLM's CPU build, in a venv of its own (see constraints/engines.txt).
test-engines:
	$(MAKE) test VENV=.venv-engines ENGINES=constraints/engines.txt TIERS=engines

# Installs slurm-wlm and munge with apt-get if slurmctld is missing (root); fails, not skips, without them.
test-slurm:
	WRPO_SLURM_REQUIRED=1 $(MAKE) test TIERS=slurm

# On a machine with one CUDA GPU, with a CUDA build of PyTorch: make gpu-check TORCH=torch (in a fresh venv:
# make clean first if .venv holds the CPU build). The `gpu` tests, then the training benchmark's CUDA points
# (bf16; the 1.35B and 3B points, each runner once) into benchmarks/train_throughput_cuda.json, sized for
# under 8 minutes on one H200. It adds the gpu extra (liger-kernel) to the venv.
gpu-check: $(STAMP)
	$(BIN)/python -c "import torch, sys; sys.exit(None if torch.cuda.is_available() else 'no CUDA GPU for torch: make gpu-check TORCH=torch')"
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[dev,gpu]"
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch-extensions $(BIN)/python -m pytest -q -m gpu
	$(BIN)/python benchmarks/train_throughput.py --device cuda --repeats 1

lint: $(STAMP)
	$(BIN)/ruff check .

# The suite on the oldest versions pyproject.toml allows, in a venv of its own.
test-oldest:
	$(MAKE) test VENV=.venv-oldest CONSTRAINTS=constraints/oldest.txt TIERS="not engines and not slurm"

clean:
	rm -rf $(VENV) .venv-oldest .venv-engines demo-output .pytest_cache
