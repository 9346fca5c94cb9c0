# The README's two commands are `make demo` and `make test`; each installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint bench scheduler scheduler-stop status serve clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)            ## run the pipeline end to end on embedded defaults
	$(BIN)/python -m pipeline.demo

test: $(STAMP)            ## lint, import contracts (.importlinter), then the test suite (what CI runs)
	$(BIN)/ruff check pipeline tasks tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -m "not slow"

test-slow: $(STAMP)       ## the heavier fault-injection and scale variants
	$(BIN)/pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check pipeline tasks tests benchmarks
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)           ## every benchmark; numbers go to docs/performance.md by hand
	for b in benchmarks/bench_*.py; do $(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; done

serve: $(STAMP)           ## the lookup API on 127.0.0.1:8090 for the snapshot published by PublishAttributes
	$(BIN)/python -m pipeline.serving.api --port 8090

scheduler: $(STAMP)       ## start luigid on 127.0.0.1:8082 (dashboard), state and logs in var/luigid
	$(BIN)/python -m pipeline.ops.scheduler start

scheduler-stop: $(STAMP)
	$(BIN)/python -m pipeline.ops.scheduler stop

status: $(STAMP)          ## warehouse status grid (+ var/status.png, var/status.html); FROM=/TO= dates
	$(BIN)/python -m pipeline.ops.status $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO)) \
		--png var/status.png --html var/status.html

clean:
	rm -rf $(VENV) warehouse var .pytest_cache
