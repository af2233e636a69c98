# Two commands set up a fresh machine:
#   make run   - virtualenv + package, then serve the guide's example app on 127.0.0.1:8000
#                (another port: make run PORT=9000)
#   make test  - system packages (redis-server, chromium) + test dependencies, then the suite
PYTHON ?= python3
PORT ?= 8000
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES_TEST := redis-server:redis-server chromium:chromium

.PHONY: run test test-fast load check lint typecheck bench bench-quick bench-deps system-deps clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

$(VENV)/.installed-run: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	# One pip command for every extra: a second one can break Celery (see pyproject.toml).
	$(PIP) install -q -e ".[test]"
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[test,bench]"
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

run: $(VENV)/.installed-run
	PORT=$(PORT) $(PY) examples/app.py

# Installs what the suite needs from Debian when missing (as root), then runs every test.
system-deps:
	@missing=""; for pair in $(APT_PACKAGES_TEST); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing - run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

test: system-deps $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The bounded load test of docs/reliability.md, alone.
load: system-deps $(VENV)/.installed-test
	$(PY) -m pytest -m load $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/ruff format --check src tests examples bench

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy

check: lint typecheck test

# The benchmarks also need wrk (the HTTP load generator).
bench-deps:
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES_TEST="$(APT_PACKAGES_TEST) wrk:wrk"

bench: bench-deps $(VENV)/.installed-bench
	$(PY) -m bench all

bench-quick: bench-deps $(VENV)/.installed-bench
	$(PY) -m bench all --quick

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
