# Quick start: `make demo` then `make test`. Both bootstrap .venv/ from uv.lock.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
S3RVER := tests/s3rver/node_modules/@20minutes/s3rver/package.json
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export UV_LINK_MODE ?= copy

.PHONY: venv demo test lint typecheck check serve bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(VENV)/bin/python
	touch $@

venv: $(VENV)/.synced

# s3rver enforces SigV4 signatures and link expiry (moto does not): the signed-link tests use it.
$(S3RVER): tests/s3rver/package.json tests/s3rver/package-lock.json
	cd tests/s3rver && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: venv
	$(VENV)/bin/tenant-export demo

test: venv $(S3RVER)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck test

serve: venv
	$(VENV)/bin/tenant-export serve

bench: venv
	$(VENV)/bin/python bench/export_throughput.py

clean:
	rm -rf $(VENV) .tenant-export tests/s3rver/node_modules
