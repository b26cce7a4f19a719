# make install: everything a fresh machine lacks; make test: the test suite.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for the CPU-only build of torch
TORCH_PIP_ARGS ?=

.PHONY: install system-deps test bench

# The extras are installed beside the torch already there, pinned to its version: an unpinned
# torchvision (an extra) would otherwise bring the newest torch it was built for (a CUDA build of GBs).

install: system-deps
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0" $(TORCH_PIP_ARGS)
	$(PIP) install -e ".[dev]" "torch==$$($(PYTHON) -c "import torch; print(torch.__version__.split('+')[0])")"

# Graphviz's dot (for pictures) and Fashion-MNIST come from Debian; installed only when root.
system-deps:
	@if [ "$$(id -u)" = "0" ] && { ! command -v dot >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; }; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz dataset-fashion-mnist; \
	elif ! command -v dot >/dev/null; then \
		echo "note: run 'sudo apt-get install graphviz dataset-fashion-mnist' for pictures and Fashion-MNIST"; \
	fi

test:
	$(PYTHON) -m pytest -q

# the self-contained benchmarks of docs/results.md (the tailoring runs take hours: benchmarks/tailor_runs.py)
bench:
	$(PYTHON) benchmarks/complexity_speed.py
	$(PYTHON) benchmarks/export_check.py
