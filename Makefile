# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test bench bench-queue bench-load system-deps clean

# Idempotent: re-runs pip only when pyproject.toml changed since the last install.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e ".[dev,postgres,s3]"
	touch $@

run: install
	$(BIN)/videosynth serve --host $(HOST) --port $(PORT)

# The tests start a throwaway PostgreSQL from the local server binaries; install them if this machine lacks them.
test: install system-deps
	$(BIN)/python -m pytest -q

system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL server binaries (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

bench: install
	$(BIN)/python bench/engine.py

bench-queue: install system-deps
	$(BIN)/python bench/queue.py

# Installs wrk (apt-get) if missing.
bench-load: install system-deps
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) var build *.egg-info src/*.egg-info
