# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install browser test test-unit test-integration demo lint mlflow-ui bench-overhead lower-bounds

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Byte-code compiled on both cores (pip compiles on one: about 1.5 of the install's 4 minutes here).
	@# Not skipped: where PYTHONDONTWRITEBYTECODE is set, Python would recompile torch in every process.
	@# Exit status ignored: a few files in torch's test helpers are for newer Pythons and do not compile.
	$(PY) -m pip install -q --no-compile -e ".[test]"
	-@$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the report page's browser test (tests/test_report.py), from apt (Debian); as root,
# else through sudo. An explicit step: `make test` never installs anything system-wide; without Chromium
# the browser test skips with its reason, except under CI=true (.ci/run runs this step first), where it fails.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@command -v chromium >/dev/null || echo "note: no chromium and no apt-get: install chromium for the browser test"

# Everything CI runs: lint and types (about a minute), the unit suite, then the integration step.
test: lint test-unit test-integration

# The unit suite (CI step 1; under 12 minutes on 2 cores), in a random order (pytest-randomly; the seed
# is in .pytest_cache/v/randomly_seed, and `--randomly-seed=N` repeats an order).
test-unit: $(STAMP)
	$(PY) -m pytest -q --durations=10 -m "not integration" -p randomly tests

# Real Ray cluster (ray start --head, ray job submit), simulated multi-node, fault and demo tests
# (CI step 2, about 31 minutes since the demo test runs README's commands too; own ports and temp dirs),
# in a random order like the unit suite.
test-integration: $(STAMP)
	$(PY) -m pytest -q --durations=0 -m integration -p randomly tests

# The main job: the whole pipeline on the embedded default dataset (configs/pipeline/demo.yaml).
demo: $(STAMP)
	$(PY) -m autovit_ray.demo $(DEMO_ARGS)

# Every dependency at its lower bound (pyproject.toml), in .venv-lowest, then the unit suite there.
lower-bounds:
	.ci/lower-bounds .venv-lowest

# ruff and mypy are pinned (pyproject.toml's test extra): a new release's rules must not fail CI unasked.
lint: $(STAMP)
	$(VENV)/bin/ruff check autovit_ray tests bench
	$(VENV)/bin/mypy

# Serve an experiment's MLflow database on 127.0.0.1 (EXP=outputs/digits-demo by default).
EXP ?= outputs/digits-demo
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(EXP))/mlflow.db --host 127.0.0.1 --port 5000

bench-overhead: $(STAMP)
	$(PY) bench/supernet_overhead.py --out BENCHMARKS.md
