# make run    set up .venv (pinned deps + kdflow) and run the default pipeline
# make test   set up if needed and run the whole test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdflow-installed

.PHONY: setup run test test-quick lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: setup
	$(VENV)/bin/snakemake --cores all

test: setup
	$(VENV)/bin/pytest

test-quick: setup
	$(VENV)/bin/pytest -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check .
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results resources .snakemake
