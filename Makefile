# `make test` and `make demo` set themselves up on a fresh clone: only Python 3.11 and pip needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCHEMAS := schemas

.PHONY: test demo lint bench schema-json clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet --disable-pip-version-check -e . --group test --group lint
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/event-backfill check sample_data/offline_sales.csv --schema $(SCHEMAS)/offline_sales.toml --quiet || true
	$(VENV)/bin/event-backfill preview sample_data/offline_sales.csv --schema $(SCHEMAS)/offline_sales.toml -n 3

lint: $(STAMP)
	$(VENV)/bin/ruff check importer tests bench
	$(VENV)/bin/mypy

schema-json: $(STAMP)
	$(PY) -c "import sys; from importer.schema import json_schema_text; sys.stdout.write(json_schema_text())" > $(SCHEMAS)/schema.json

clean:
	rm -rf $(VENV) .backfill bench/out
