# The README's commands. Each one does the set-up it needs first (scripts/setup.sh), which is a
# quick no-op when nothing changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh &&

.PHONY: help setup demo test lint ui bench

help:
	@echo "make demo   set up, generate the demo shop, run the daily DAG for its last days"
	@echo "make test   set up, lint (ruff + Airflow rules), run the whole test suite"
	@echo "make ui     set up, start the Airflow UI (airflow standalone) on http://localhost:8080"
	@echo "make bench  run the benchmarks in bench/"

setup:
	@scripts/setup.sh

demo: setup
	@$(ENV) huitouke demo

lint: setup
	@$(ENV) ruff check . && ruff format --check --quiet . || { echo "lint failed: ruff check --fix . && ruff format ."; exit 1; }

test: setup
	@scripts/test.sh

ui: setup
	@scripts/ui.sh

bench: setup
	@$(ENV) python -m pip install -qq -c constraints.txt -e '.[dev,bench]'
	@$(ENV) python bench/dag_parse.py
	@$(ENV) python bench/segments.py
