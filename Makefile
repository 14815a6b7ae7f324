# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
TORCH ?= 2.13.0

.PHONY: install run test test-faults check bench bench-queue bench-load system-deps clean

# Idempotent: re-runs pip only when pyproject.toml changed since the last install.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	# torch first, pinned: this machine kind has that CPU build on local disk, and the [gpu] extra's range
	# then installs nothing more (any other torch spec downloads a CUDA build of several GB).
	$(BIN)/pip install -q torch==$(TORCH)
	$(BIN)/pip install -q -e ".[dev,postgres,s3,gpu]"
	touch $@

run: install
	$(BIN)/videosynth serve --host $(HOST) --port $(PORT)

# House rules: lint, format, strict types on src/, import layers. CI runs this before the tests.
check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The tests start a throwaway PostgreSQL from the local server binaries, and drive the server with curl, Node and
# Java (single-file source mode needs a JDK's compiler), and the web console in Debian's Chromium; install whichever
# of them this machine lacks.
test: install system-deps
	$(BIN)/python -m pytest -q

# The slow fault tests (tests/test_faults.py, marker `faults`): PostgreSQL restarted under load, the S3 server
# restarted during uploads, 1,000 tasks through 4 workers. `make test` runs the quick ones; CI runs both.
# -rP prints each test's figures.
test-faults: install system-deps
	$(BIN)/python -m pytest -q -m faults -rP tests/test_faults.py

system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v javac >/dev/null 2>&1 || missing="$$missing openjdk-17-jdk-headless"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bench: install
	$(BIN)/python bench/engine.py

bench-queue: install system-deps
	$(BIN)/python bench/queue.py

# Installs wrk (apt-get) if missing.
bench-load: install system-deps
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) var build *.egg-info src/*.egg-info
