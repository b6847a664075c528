# tvixmount developer entry points. Every target bootstraps .venv when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNT    ?= mnt

.PHONY: run stop test lint proto bench clean

$(STAMP): pyproject.toml scripts/install-pyfuse3 $(wildcard patches/*)
	scripts/install-system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	scripts/install-pyfuse3 $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m tvixmount.demo up $(MNT)

stop: $(STAMP)
	$(BIN)/python -m tvixmount.demo down $(MNT)

lint: $(STAMP)
	$(BIN)/ruff check tvixmount tests bench
	$(BIN)/ruff format --check tvixmount tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

proto: $(STAMP)
	$(BIN)/python -m tvixmount._protogen protos tvixmount/_proto

# The mount figures (bench.run, real software included), then one peer comparison per
# command this wave added; each prints its table and its ratios from the same run.
BENCHES := import_throughput copy_bench serve_http_bench run_closure_bench housekeeping_bench

bench: $(STAMP)
	$(BIN)/python -m bench.run
	for b in $(BENCHES); do $(BIN)/python -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
