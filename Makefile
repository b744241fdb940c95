# Everyday commands. `make test` is the one command that installs what the tests need and runs
# every check; .ci/run calls exactly that.
#
# The release build happens once per `make test` and CPython version: `maturin build --release`
# writes one wheel per version in PYTHON_VERSIONS to dist/, each from that interpreter on this
# machine (pyenv's; scripts/find-python.sh). The wheel for .venv's Python is installed into .venv
# (lint + the whole suite), into a clean venv with no Rust toolchain on PATH and the newest
# Tornado 6.x (the whole suite again), and into a venv with the oldest supported Tornado (the
# end-to-end tests); every other version's wheel goes into a clean venv of its own interpreter
# and runs the end-to-end tests. `make build-dev` is the editable dev loop instead (maturin
# develop); `make test` replaces it with the wheel again.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DIST := dist
# The CPython versions wheels are built and tested for: pyproject.toml's requires-python and
# classifiers say the same.
PYTHON_VERSIONS := 3.10 3.11 3.12 3.13
VENV_PYTHON_VERSION = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
wheel_for = $(firstword $(wildcard $(DIST)/tornsession-*-cp$(subst .,,$(1))-cp$(subst .,,$(1))-*.whl))
# The wheel for .venv's Python.
WHEEL = $(call wheel_for,$(VENV_PYTHON_VERSION))
# Oldest Tornado that installs and passes on CPython 3.11 (5.1.x does not import on 3.10+).
TORNADO_OLDEST ?= 6.0
# The tests the oldest Tornado runs: every end-to-end test plus the quick API ones.
TORNADO_TESTS := tests/test_seed_app.py tests/test_concurrency.py tests/test_lifecycle.py \
	tests/test_manager_api.py tests/test_bad_cookies.py tests/test_demo.py \
	tests/test_testing_plugin.py tests/test_migrate.py tests/test_session_dict.py \
	tests/test_hostile_input.py tests/test_cleanup.py tests/test_stores_sqlite.py \
	tests/test_stores_network.py tests/test_examples.py tests/test_migrate_rescue.py \
	tests/test_redis_tls_sentinel.py tests/test_engine_http.py tests/test_options.py \
	tests/test_no_panics.py tests/test_store_hardening.py tests/test_settings_warning.py
PY_SOURCES := python tests bench scripts examples
# Type-checked as a user would: against the installed wheel, mypy --strict, no project config.
TYPED_EXAMPLES := examples/typed_app.py examples/multiprocess/app.py \
	examples/multiprocess/run.py scripts/pytest_tornado_compat.py scripts/check-sdist.py

.PHONY: test deps venv wheel install-wheel build-dev lint-rust test-rust lint-python test-python \
	test-wheel-clean test-tornado-oldest test-wheel-pythons sdist sdist-build demo format clean

test: deps venv lint-rust test-rust wheel install-wheel lint-python test-python \
	test-wheel-clean test-tornado-oldest test-wheel-pythons sdist

# Debian packages the tests need (Redis, Memcached, Chromium + chromedriver); only when missing.
deps:
	@bash scripts/install-system-deps.sh

venv:
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt

# The release build: a manylinux wheel per CPython version in dist/ (maturin checks the glibc
# symbols it needs and picks the manylinux tag; scripts/test-wheel-venv.sh checks the tag).
wheel:
	rm -f $(DIST)/tornsession-*.whl
	MATURIN=$(VENV)/bin/maturin bash scripts/build-wheels.sh $(DIST) $(PYTHON_VERSIONS)

# The wheel into .venv, replacing an editable `make build-dev` install; then its dependencies.
install-wheel:
	$(PIP) install --quiet --force-reinstall --no-deps $(WHEEL)
	$(PIP) install --quiet $(WHEEL)

# Dev loop: an editable install (Python sources used in place), rebuilt after Rust changes.
build-dev:
	$(VENV)/bin/maturin develop --release --quiet

lint-rust:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

# The core crate's tests with no Python on PATH (it has none in it), then the binding crate's.
test-rust:
	bash scripts/test-core-no-python.sh --quiet
	cargo test -p tornsession --quiet

lint-python:
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file= --strict $(TYPED_EXAMPLES)
	$(PY) -m mypy.stubtest tornsession._core --allowlist stubtest-allowlist.txt

test-python:
	$(VENV)/bin/pytest

# The wheel in a fresh venv with no cargo/rustc on PATH and the newest Tornado 6.x: whole suite
# (but the browser test, which .venv runs, and the short kill soak, which .venv runs too: it
# drives the app over HTTP for about two minutes and tests the same wheel).
test-wheel-clean:
	PYTHON=$(PY) bash scripts/test-wheel-venv.sh .venv-wheel "tornado>=6,<7" $(WHEEL) \
		--ignore=tests/test_browser.py --ignore=tests/test_kill_soak_short.py

# The wheel with the oldest Tornado we support.
test-tornado-oldest:
	PYTHON=$(PY) bash scripts/test-wheel-venv.sh .venv-tornado-oldest "tornado==$(TORNADO_OLDEST).*" \
		$(WHEEL) \
		$(TORNADO_TESTS)

# Every other version's wheel, in a clean venv of that interpreter: the end-to-end tests.
test-wheel-pythons:
	@for version in $(filter-out $(VENV_PYTHON_VERSION),$(PYTHON_VERSIONS)); do \
		tag=cp$$(echo $$version | tr -d .); \
		wheel=$$(ls $(DIST)/tornsession-*-$$tag-$$tag-*.whl) || exit 1; \
		echo "== CPython $$version: $$wheel"; \
		start=$$(date +%s); \
		PYTHON=$$(bash scripts/find-python.sh $$version) bash scripts/test-wheel-venv.sh \
			.venv-py$$version "tornado>=6,<7" $$wheel $(TORNADO_TESTS) || exit 1; \
		echo "== CPython $$version: passed in $$(( $$(date +%s) - start )) s"; \
	done

# The sdist: built and its contents checked (seconds). Building a wheel from it is a second
# release build, so CI does not; run `make sdist-build` before a release.
sdist:
	rm -f $(DIST)/tornsession-*.tar.gz
	$(VENV)/bin/maturin sdist --out $(DIST)
	$(PY) scripts/check-sdist.py $(DIST)/tornsession-*.tar.gz

sdist-build: sdist
	bash scripts/sdist-build.sh $(DIST)/tornsession-*.tar.gz

# The demo runs on the tornsession .venv already has (the wheel `make test` installed, or a
# `make build-dev`), never replacing it. Only without one does it build the wheel for .venv's
# Python and install it offline (its dependency, tornado, is in .venv from requirements-dev.txt).
demo:
	@test -x $(PY) || $(MAKE) venv
	@$(PY) -c 'import tornsession' 2>/dev/null || { \
		$(VENV)/bin/maturin build --release --quiet --interpreter $(PY) -o $(DIST) && \
		$(PIP) install --quiet --no-index --no-deps --find-links $(DIST) tornsession; }
	$(PY) -m tornsession.demo

format:
	cargo fmt --all
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)

clean:
	rm -rf target $(DIST) $(VENV) .venv-wheel .venv-tornado-oldest .venv-py3.* .pytest_cache \
		.mypy_cache .ruff_cache

# Long fuzz and soak runs (docs/soak-and-fuzz.md); minutes, not seconds.
.PHONY: fuzz-long soak-long soak
fuzz-long:
	PROPTEST_CASES=100000 cargo test -p tornsession-core --release --quiet --test proptest_parsing
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q tests/test_fuzz_api.py

soak-long:
	CRASH_KILLS=5000 CRASH_SECONDS=900 $(VENV)/bin/pytest -q -s tests/test_crash_consistency.py
	SOAK_CLIENTS=16 SOAK_REQUESTS=5000 $(VENV)/bin/pytest -q -s tests/test_soak.py
	OUTAGE_CLIENTS=16 OUTAGE_ROUNDS=10 OUTAGE_ACKS=200 OUTAGE_DOWN_SECONDS=3 \
	  SHARED_SOAK_CLIENTS=16 SHARED_SOAK_REQUESTS=5000 $(VENV)/bin/pytest -q -s tests/test_outage_soak.py

# The kill soak on every store (tests/kill_soak.py, docs/soak-and-fuzz.md): 200,000 requests over
# 20,000 sessions per store, the store or the app SIGKILLed every 20,000; prints the figures.
# Sizes: KILL_SOAK_STORES, _REQUESTS, _SESSIONS, _KILL_EVERY, _CLIENTS, or flags in SOAK_ARGS
# (--json PATH writes the figures). Its short run is tests/test_kill_soak_short.py in `make test`.
soak: venv build-dev
	$(PY) tests/kill_soak.py $(SOAK_ARGS)

# Side-by-side benchmarks against the original module and the peers; writes BENCHMARKS.md.
# Not part of `make test`. BENCH_ARGS=--quick for a smoke run, --no-scale to skip the 1M part.
.PHONY: bench
bench: venv build-dev
	VENV=$(VENV) bash bench/run.sh $(BENCH_ARGS)
