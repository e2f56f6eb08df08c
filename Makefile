# Two commands set everything up on a fresh Debian machine with Python 3.11:
#   make demo   the main job: data, train, export, publish, serve, query
#   make test   lint, type check and the whole test suite (real redis-server, real gRPC, real MLflow)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.plexrec-installed

.PHONY: install redis-binary test lint typecheck demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU stack: torch's CPU wheel, the CPU build of FBGEMM, and torchrec without its CUDA dependency.
	$(BIN)/pip install -q torch==2.13.0 fbgemm-gpu-cpu==1.8.0
	$(BIN)/pip install -q --no-deps torchrec==1.8.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

redis-binary:
	@bash scripts/ensure-redis-server.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	bash scripts/typecheck.sh

test: install redis-binary lint typecheck
	$(BIN)/python -m pytest -q

demo: install redis-binary
	$(BIN)/plexrec demo $(if $(DATA),--data $(DATA),)

bench: install redis-binary
	$(BIN)/pip install -q lightgbm==4.7.0 scikit-learn==1.9.1 implicit==0.7.3  # the [bench] extra: baselines only
	$(BIN)/python -m bench.run_all $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) .plexrec
