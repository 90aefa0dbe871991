# `make run` and `make test` do everything on a fresh machine: venv, install, then run/test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
# axe-core for the browser accessibility test, pinned by tests/a11y/package-lock.json.
AXE := tests/a11y/node_modules/axe-core/axe.min.js

.PHONY: run test lint format bench clean-venv

$(BIN)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# The optional Ray extra, for the Ray executor's tests (never needed by `make run`).
$(BIN)/.installed-ray: $(BIN)/.installed requirements-ray.txt
	$(BIN)/python -m pip install --quiet -r requirements-ray.txt
	touch $@

$(AXE): tests/a11y/package.json tests/a11y/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		echo "npm not found: tests/test_browser_a11y.py will skip (in CI it fails)"; \
	fi

run: $(BIN)/.installed
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: $(BIN)/.installed $(BIN)/.installed-ray $(AXE)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/inference_latency.py
	$(BIN)/python bench/canvas_accuracy.py
	$(BIN)/python bench/app_latency.py
	$(BIN)/python bench/classroom_load.py

clean-venv:
	rm -rf $(VENV)
