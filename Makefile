# The two commands of the quick start (make run, make test) and a few more.
# Each target creates .venv and installs the project into it when needed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# Demo settings for `make run` only: a throwaway key, never for production.
DEMO_SECRET ?= demo-secret-for-make-run-only

.PHONY: help install run test lint typecheck suite fuzz bench clean

help:
	@echo "make run    start a receptor on 127.0.0.1:8080 with a demo hook and demo traffic"
	@echo "make test   lint (ruff), type-check (mypy) and run the whole test suite (pytest)"
	@echo "make suite  only the test suite; e.g. make suite PYTHON=python3.13 VENV=.venv-3.13"
	@echo "make fuzz   coverage-guided fuzzing of the parser (atheris), FUZZ_SECONDS=600"
	@echo "make bench  soapreceptor vs a naive spyne receptor vs the bare limit (needs wrk), BENCH_ARGS=..."
	@echo "make clean  remove the virtualenv and caches"

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# gunicorn's C HTTP parser is built from source: without a C compiler, gunicorn's Python parser serves.
	@$(BIN)/python -m pip install --quiet -e '.[fast]' >$(VENV)/fast-extra.log 2>&1 \
		|| echo "note: gunicorn's C HTTP parser (gunicorn_h1c, the fast extra) did not build here" \
			"(no C compiler?); gunicorn reads HTTP with its Python parser. See $(VENV)/fast-extra.log"
	@touch $@

install: $(STAMP)

run: $(STAMP)
	SOAPRECEPTOR_SECRET="$${SOAPRECEPTOR_SECRET:-$(DEMO_SECRET)}" \
	SOAPRECEPTOR_HOOK="$${SOAPRECEPTOR_HOOK:-soapreceptor.hooks:print_event}" \
	SOAPRECEPTOR_JOURNAL="$${SOAPRECEPTOR_JOURNAL:-./soapreceptor.db}" \
	$(BIN)/soapreceptor serve --demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

suite: $(STAMP)
	$(BIN)/pytest

test: lint typecheck suite

# Not part of `make test`: a long coverage-guided session. Crashes are saved as crash-* files.
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet atheris
	$(BIN)/python tests/fuzz/fuzz_wire.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 .fuzz/corpus

# Not part of `make test`: about 16 minutes on 2 cores; results in benchmarks/results/.
# Needs wrk (apt-get install wrk). E.g. BENCH_ARGS="--rounds 5 --duration 10".
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python -m benchmarks.harness $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .fuzz
