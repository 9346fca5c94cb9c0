# The README's two commands are `make demo` and `make test`; each installs what it needs first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint bench bench-scale scheduler scheduler-stop status serve clean

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

bench: $(STAMP)           ## every benchmark but bench-scale; numbers go to docs/performance.md by hand
	for b in benchmarks/bench_*.py; do [ "$$b" = benchmarks/bench_scale.py ] && continue; \
		$(BIN)/python -m benchmarks.$$(basename $$b .py) || exit 1; done

bench-scale: $(STAMP)     ## the day sequence at 100k and 1M tracks (about 1-2 h on 2 cores; ~25 GB in $$TMPDIR)
	$(BIN)/python -m benchmarks.bench_scale --sizes 100000 --name scale_100k
	$(BIN)/python -m benchmarks.bench_scale --sizes 1000000 --no-compare --name scale_1m
	$(BIN)/python -m benchmarks.bench_scale --merge scale_100k scale_1m --name scale

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
