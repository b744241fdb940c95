# Everyday commands.
#   make check  the edit loop: cargo fmt/clippy/test, ruff, mypy, stubtest and the fast Python tests
#               (-m "not slow": tests/conftest.py) in parallel against an editable debug build
#               (maturin develop).
#   make test   every check; .ci/run calls exactly that.
#
# `make test` runs its stages as three lanes at once (make -j3, each stage's output printed when it
# ends; PIPELINE below holds the order): the release wheels (.venv's CPython first, then the
# others; they alone take target/release's lock), the Rust checks (target/debug), and the tests
# of each wheel as soon as it exists. Each release wheel is built once per CPython version in
# PYTHON_VERSIONS to dist/, from that interpreter on this machine (pyenv's; scripts/find-python.sh).
# The wheel for .venv's Python goes into .venv (lint, stubtest, the browser test), into a clean
# venv with no Rust toolchain on PATH and the newest Tornado 6.x (the whole suite but the browser
# test), and into a venv with the oldest supported Tornado (the end-to-end tests); every other
# version's wheel goes into a clean venv of its own interpreter and runs the end-to-end tests.
# pytest runs on PYTEST_WORKERS processes (pytest-xdist) in every venv.
# `make build-dev` is the editable dev loop instead (maturin develop); `make test` replaces it
# with the wheel again.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DIST := dist
# The CPython versions wheels are built and tested for: pyproject.toml's requires-python and
# classifiers say the same.
PYTHON_VERSIONS := 3.10 3.11 3.12 3.13
VENV_PYTHON_VERSION = $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# The wheel in dist/ for CPython $(1), found by the shell as the recipe runs: make's $(wildcard)
# caches the folder and would miss a wheel built earlier in the same run.
wheel_for = $$(ls $(DIST)/tornsession-*-cp$(subst .,,$(1))-cp$(subst .,,$(1))-*.whl | head -n 1)
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
# pytest-xdist workers for every suite run (auto: one per CPU); each worker starts its own Redis
# and memcached servers on free ports (tests/servers.py), so the tests share nothing.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist worksteal
# Type-checked as a user would: against the installed wheel, mypy --strict, no project config.
TYPED_EXAMPLES := examples/typed_app.py examples/multiprocess/app.py \
	examples/multiprocess/run.py scripts/pytest_tornado_compat.py scripts/check-sdist.py

OTHER_VERSIONS = $(filter-out $(VENV_PYTHON_VERSION),$(PYTHON_VERSIONS))
WHEEL_STAGES := $(addprefix wheel-,$(PYTHON_VERSIONS))
PYTHON_STAGES := $(addprefix test-wheel-py,$(PYTHON_VERSIONS))

.PHONY: test check deps venv wheel $(WHEEL_STAGES) install-wheel build-dev lint-rust test-rust \
	lint-python test-python test-browser test-wheel-clean test-tornado-oldest test-wheel-pythons \
	$(PYTHON_STAGES) sdist sdist-build demo docs format clean pipeline

# Everything CI checks. deps and venv first (the rest reads .venv), then the stages in three lanes.
test: deps venv
	$(MAKE) --no-print-directory -j3 --output-sync=target PIPELINE=1 pipeline

# Only in `make test`'s own make, where .venv (read for its Python version) exists.
ifdef PIPELINE
# The stages in the order make starts them (three at a time).
pipeline: wheel-$(VENV_PYTHON_VERSION) lint-rust sdist install-wheel lint-python test-wheel-clean \
	test-rust test-tornado-oldest docs test-browser test-wheel-pythons
	@echo "make test: every stage passed"

# Two cargo commands on one profile's folder wait for each other's lock: chain them rather than
# hold a job slot waiting. .venv's wheel is built first: most tests wait for it.
test-rust: | lint-rust
# Builds yield the CPU to the tests running beside them: a test starved for a second fails
# (1 s idle timeouts, 0.3 s leases), a build only takes longer.
lint-rust test-rust $(WHEEL_STAGES): NICE := nice -n 10
wheel_chain = $(if $(word 2,$(1)),$(eval wheel-$(word 2,$(1)): | wheel-$(word 1,$(1)))$(call \
	wheel_chain,$(wordlist 2,$(words $(1)),$(1))))
$(call wheel_chain,$(VENV_PYTHON_VERSION) $(OTHER_VERSIONS))
install-wheel test-wheel-clean test-tornado-oldest: | wheel-$(VENV_PYTHON_VERSION)
lint-python test-browser docs: | install-wheel
# The docs' tools go into .venv by pip, which the browser stage's tests then use (one pip at a
# time in one venv).
test-browser: | docs
$(PYTHON_STAGES): test-wheel-py%: | wheel-%
# One pytest stage at a time (each already uses every core through xdist): two at once starved
# the timing-sensitive tests (a 1 s idle timeout, the 0.3 s turn lease) into failing. Builds
# and the Rust checks run beside them, niced.
test_chain = $(if $(word 2,$(1)),$(eval $(word 2,$(1)): | $(word 1,$(1)))$(call \
	test_chain,$(wordlist 2,$(words $(1)),$(1))))
$(call test_chain,test-wheel-clean test-tornado-oldest $(addprefix test-wheel-py,$(OTHER_VERSIONS)))
endif

# The edit loop: lint, Rust tests, an editable debug build and the fast Python tests, in parallel.
check:
	@test -x $(PY) || $(MAKE) venv
	$(MAKE) --no-print-directory lint-rust test-rust
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet
	$(MAKE) --no-print-directory lint-python
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL) -m "not slow"

# Debian packages the tests need (Redis, Memcached, Chromium + chromedriver); only when missing.
deps:
	@bash scripts/install-system-deps.sh

venv:
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt

# The release build: a manylinux wheel per CPython version in dist/ (maturin checks the glibc
# symbols it needs and picks the manylinux tag; scripts/test-wheel-venv.sh checks the tag).
wheel: $(WHEEL_STAGES)

# One version's wheel (replacing any older one of that version).
$(WHEEL_STAGES): wheel-%:
	rm -f $(DIST)/tornsession-*-cp$(subst .,,$*)-cp$(subst .,,$*)-*.whl
	MATURIN=$(VENV)/bin/maturin $(NICE) bash scripts/build-wheels.sh $(DIST) $*

# The wheel into .venv, replacing an editable `make build-dev` install; then its dependencies.
install-wheel:
	$(PIP) install --quiet --force-reinstall --no-deps $(WHEEL)
	$(PIP) install --quiet $(WHEEL)

# Dev loop: an editable install (Python sources used in place), rebuilt after Rust changes.
build-dev:
	$(VENV)/bin/maturin develop --release --quiet

lint-rust:
	$(NICE) cargo fmt --all -- --check
	$(NICE) cargo clippy --workspace --all-targets --quiet -- -D warnings

# The core crate's tests with no Python on PATH (it has none in it), then the binding crate's.
test-rust:
	$(NICE) bash scripts/test-core-no-python.sh --quiet
	$(NICE) cargo test -p tornsession --quiet

lint-python:
	$(PY) scripts/check-shape.py
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file= --strict $(TYPED_EXAMPLES)
	$(PY) -m mypy.stubtest tornsession._core --allowlist stubtest-allowlist.txt

# The whole suite in .venv (`make test` runs it in the clean venv instead; see test-browser).
test-python:
	$(VENV)/bin/pytest $(PYTEST_PARALLEL)

# The browser tests in .venv, where requirements-dev.txt put Selenium and the docs' tools (the
# built site is opened in Chromium); the clean venv has only the wheel's [test] extra, so that a
# dependency the wheel forgot cannot hide behind Selenium's.
test-browser:
	$(VENV)/bin/pytest -q tests/test_browser.py tests/test_demo_browser.py tests/test_docs.py

# The wheel in a fresh venv with no cargo/rustc on PATH and the newest Tornado 6.x: the whole
# suite but the browser tests (test-browser). The only run of the whole suite in `make test`:
# .venv has the same wheel, CPython and Tornado, and no test uses its dev tools.
test-wheel-clean:
	PYTHON=$(PY) bash scripts/test-wheel-venv.sh .venv-wheel "tornado>=6,<7" $(WHEEL) \
		$(PYTEST_PARALLEL) --ignore=tests/test_browser.py --ignore=tests/test_demo_browser.py \
		--ignore=tests/test_docs.py

# The wheel with the oldest Tornado we support.
test-tornado-oldest:
	PYTHON=$(PY) bash scripts/test-wheel-venv.sh .venv-tornado-oldest "tornado==$(TORNADO_OLDEST).*" \
		$(WHEEL) $(PYTEST_PARALLEL) $(TORNADO_TESTS)

# Every other version's wheel, in a clean venv of that interpreter: the end-to-end tests.
test-wheel-pythons: $(addprefix test-wheel-py,$(OTHER_VERSIONS))

$(PYTHON_STAGES): test-wheel-py%:
	PYTHON=$$(bash scripts/find-python.sh $*) bash scripts/test-wheel-venv.sh .venv-py$* \
		"tornado>=6,<7" $(call wheel_for,$*) $(PYTEST_PARALLEL) $(TORNADO_TESTS)

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

# The documentation site into site/ (open site/index.html; it works offline): the README, docs/
# and the API reference made from the docstrings (mkdocs.yml). Fails on any warning, a broken link
# or anchor included. The tools are pinned in requirements-docs.txt.
docs:
	@test -x $(PY) || $(MAKE) venv
	$(PIP) install --quiet -r requirements-docs.txt
	$(VENV)/bin/mkdocs build --strict --site-dir site

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
