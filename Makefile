# LLMs from the Ground Up. `make book` builds the book, `make test` runs every test (README.md).
# Both create the project's virtual environment and fetch the data assets first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: venv system data book test test-fast lab serve release check bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml nbgrader_config.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	mkdir -p $(VENV)/etc/jupyter && cp nbgrader_config.py $(VENV)/etc/jupyter/  # students' validate settings
	touch $@

# Debian packages the tests drive for real: chromium (the book and JupyterLab in a browser) and
# postgresql (the gradebook on a real server). Installed with apt when missing (root or sudo).
SYSTEM_PACKAGES := chromium postgresql
system:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "Installing Debian packages: $(SYSTEM_PACKAGES)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

data: venv          ## fetch the course assets and build the cached artifacts
	$(BIN)/python -m llm_lib.data
	$(BIN)/python -m llm_lib.pipeline all

book: data          ## build the book into _build/html (executes every chapter, cached)
	$(BIN)/jupyter-book build .
	@echo "Book built: open _build/html/index.html or run 'make serve'"

test: book system   ## the whole test suite (builds the book first: tests check the HTML too)
	$(BIN)/python -m pytest -n 2 --durations=15

test-fast: data     ## everything but the slow notebook/grading/book tests
	$(BIN)/python -m pytest -n 2 -m "not slow"

lab: data           ## JupyterLab on the student notebooks
	$(BIN)/jupyter lab chapters/

serve:              ## serve the built book at http://127.0.0.1:8000
	$(BIN)/python -m http.server --directory _build/html --bind 127.0.0.1 8000

release: venv       ## regenerate chapters/ from solutions/
	$(BIN)/python -m autograder release

check: venv         ## solutions full marks, releases zero, nothing leaks
	$(BIN)/python -m autograder check

bench: data         ## run every benchmark; results in benchmarks/RESULTS.md
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf _build .pytest_cache
