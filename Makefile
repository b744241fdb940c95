# Everyday commands. `make test` is the one command that installs what the tests need and runs
# every check; .ci/run calls exactly that.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: test deps venv build-dev lint-rust test-rust lint-python test-python demo format clean

test: deps venv lint-rust test-rust build-dev lint-python test-python

# Debian packages the tests need (real Redis and Memcached servers); installed only when missing.
deps:
	@bash scripts/install-system-deps.sh

venv:
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt

# One release build, installed into the venv (editable: the Python sources are used in place).
build-dev:
	$(VENV)/bin/maturin develop --release --quiet

lint-rust:
	cargo fmt --all -- --check
	cargo clippy --all-targets --quiet -- -D warnings

test-rust:
	cargo test --quiet

lint-python:
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest tornsession._core --allowlist stubtest-allowlist.txt

test-python:
	$(VENV)/bin/pytest

demo: venv build-dev
	$(PY) -m tornsession.demo

format:
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench
	$(VENV)/bin/ruff check --fix python tests bench

clean:
	rm -rf target $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Long fuzz and soak runs (docs/soak-and-fuzz.md); minutes, not seconds.
.PHONY: fuzz-long soak-long
fuzz-long:
	PROPTEST_CASES=100000 cargo test --release --quiet --test proptest_parsing
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q tests/test_fuzz_api.py

soak-long:
	CRASH_KILLS=5000 CRASH_SECONDS=900 $(VENV)/bin/pytest -q -s tests/test_crash_consistency.py
	SOAK_CLIENTS=16 SOAK_REQUESTS=5000 $(VENV)/bin/pytest -q -s tests/test_soak.py
	OUTAGE_CLIENTS=16 OUTAGE_ROUNDS=10 OUTAGE_ACKS=200 OUTAGE_DOWN_SECONDS=3 \
	  SHARED_SOAK_CLIENTS=16 SHARED_SOAK_REQUESTS=5000 $(VENV)/bin/pytest -q -s tests/test_outage_soak.py

# Side-by-side benchmarks against the original module and the peers; writes BENCHMARKS.md.
# Not part of `make test`. BENCH_ARGS=--quick for a smoke run, --no-scale to skip the 1M part.
.PHONY: bench
bench: venv build-dev
	VENV=$(VENV) bash bench/run.sh $(BENCH_ARGS)
