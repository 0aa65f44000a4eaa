# Thin wrappers. The README names two of them: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PORT ?= 4000
CONFIG ?= examples/local.yaml
export HF_HUB_OFFLINE := 1

.PHONY: run test bench manifests docs lint kind-e2e model system-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# torch first: the CPU wheel of 2.13.0 on local disk (otherwise pip pulls GBs of CUDA), needed only to export the model.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[semantic,export,postgres,operator,dev]'
	@touch $@

venv: $(STAMP)

system-deps:
	@bash .ci/system-deps.sh

# The local embedding model exported to ONNX once (git-ignored).
model: $(STAMP)
	@test -f .cache/models/all-MiniLM-L6-v2-onnx/model.onnx || $(BIN)/llmgw-sidecar export-model --out .cache/models/all-MiniLM-L6-v2-onnx

run: system-deps $(STAMP) model
	@$(BIN)/python -m llmgw_sidecar.devredis --port $${LLMGW_REDIS_PORT:-6379} --dir .data/redis & \
	  redis_pid=$$!; trap "kill $$redis_pid 2>/dev/null" EXIT; \
	  $(BIN)/python -c "from llmgw_sidecar.devredis import wait_port; wait_port($${LLMGW_REDIS_PORT:-6379}, 20)" && \
	  LLMGW_PROVIDER=$${LLMGW_PROVIDER:-$$( [ -n "$${OPENAI_API_KEY:-}" ] && echo openai || echo mock )} \
	  $(BIN)/llmgw-sidecar serve --config $(CONFIG) --port $(PORT)

test: system-deps $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: system-deps $(STAMP) model
	$(BIN)/python bench/sidecar_bench.py

manifests: $(STAMP)
	$(BIN)/python -m llmgw_operator.render_manifests > manifests/install.yaml

# Regenerate the reference sections that tests keep in sync with the code.
docs: $(STAMP)
	$(BIN)/python -m llmgw_sidecar.config_docs --write docs/configuration.md
	$(BIN)/python -m llmgw_sidecar.metrics_docs --write docs/metrics.md
	$(BIN)/python -m llmgw_operator.crd_docs > docs/crd.md

lint: $(STAMP)
	$(BIN)/ruff check .

kind-e2e:
	bash tests/e2e/kind.sh

clean:
	rm -rf $(VENV) .data .cache
