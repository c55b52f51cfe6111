# The README's two quickstart commands are `make quickstart` and `make test`; each sets up from nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SRLM := $(VENV)/bin/srlm

.PHONY: setup quickstart test up bench clean

setup:
	bash scripts/setup.sh

quickstart: setup
	$(SRLM) run --config configs/quickstart.yaml

test: setup
	$(PY) -m pytest -q tests

up: setup
	bash scripts/airflow_up.sh

bench: setup
	$(PY) bench/generation.py

clean:
	rm -rf srlm-store airflow-home
