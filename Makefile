# `make test` and `make demo` set themselves up on a fresh clone: only Python 3.11 and pip needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCHEMAS := schemas

.PHONY: test test-fast test-lowest demo lint bench schema-json clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[curl,dask,fast,report]' --group test --group lint
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The inner loop, under 30 s: the unit tests. Left out are the `e2e` tests (they start
# processes, or send whole files through real servers; tests/conftest.py marks them) and
# the `slow` ones (kill -9 loops, outages). `make test` runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not e2e" -q

# The lower bounds in pyproject.toml are true: a fresh .venv-lowest gets every runtime
# dependency at exactly its lower bound (wheels only), then the CLI's --help screens and the
# fast tests run in it (~1 min). See ci/lowest.py.
test-lowest:
	$(PYTHON) ci/lowest.py

DEMO_LEDGER := .backfill/demo-ledger.sqlite
EB := $(VENV)/bin/event-backfill

demo: $(STAMP)
	@echo "== 1. check a store POS export (600 orders): nothing is sent =="
	$(EB) check sample_data/offline_sales.csv --schema $(SCHEMAS)/offline_sales.toml --quiet
	@echo
	@echo "== 2. check a file with a bad row for every rule (exit 3 is expected) =="
	@mkdir -p .backfill
	$(EB) check sample_data/bad_rows.csv --schema $(SCHEMAS)/bad_rows.toml --quiet --rejects .backfill/demo-rejects.csv || test $$? -eq 3
	@echo
	@echo "== 3. send the export into a local collector (--sandbox) =="
	rm -f $(DEMO_LEDGER) $(DEMO_LEDGER)-wal $(DEMO_LEDGER)-shm
	$(EB) send sample_data/offline_sales.csv --schema $(SCHEMAS)/offline_sales.toml --sandbox --ledger $(DEMO_LEDGER)
	@echo
	@echo "== 4. the same command again: it resumes and sends nothing twice =="
	$(EB) send sample_data/offline_sales.csv --schema $(SCHEMAS)/offline_sales.toml --sandbox --ledger $(DEMO_LEDGER)
	@echo
	$(EB) status --ledger $(DEMO_LEDGER)

lint: $(STAMP)
	$(VENV)/bin/ruff check importer tests bench
	$(VENV)/bin/mypy

schema-json: $(STAMP)
	$(PY) -c "import sys; from importer.schema import json_schema_text; sys.stdout.write(json_schema_text())" > $(SCHEMAS)/schema.json

clean:
	rm -rf $(VENV) .venv-lowest .backfill bench/out
