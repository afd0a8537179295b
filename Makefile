# edge-ad developer entry points. `make demo` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: 2.14.1 is the newest this project supports (and what the build machines carry).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test test-fast typecheck lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "edge-ad needs Python >= 3.10"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[train,cpu,dev,plc,security,openvino,mqtt,hmi,postgres,parquet]"
	@# GigE Vision (Aravis via PyGObject) needs system packages; without them the camera tests skip.
	@if pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null; then \
		$(BIN)/python -m pip install -q -e ".[gige]"; \
	else \
		echo "note: GigE extra skipped (apt install gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config)"; \
	fi
	touch $@

demo: setup
	$(BIN)/edge-ad demo

test: setup
	$(BIN)/python -m pytest -q

# the fast tier (~1 min on 2 cores): no training, export or real peers (tests marked `slow`)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

typecheck: setup
	.ci/typecheck $(BIN)/python

lint: setup
	$(BIN)/python -m ruff check .

clean:
	rm -rf demo_out packages .pytest_cache .mypy_cache
