# Thin wrappers. `make help` lists the targets; the README's quick start names `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# EXPORT=0 skips torch and the model exporter (~2 GB of the ~2.4 GB environment): then the semantic model must already
# be exported into MODEL_DIR (see README), or the config must use the openai embedding provider.
EXPORT ?= 1
comma := ,
EXTRAS := semantic,postgres,operator,dev$(if $(filter 1,$(EXPORT)),$(comma)export)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-8)-$(EXPORT)
PORT ?= 4000
CONFIG ?= examples/local.yaml
MODEL_DIR := .cache/models/all-MiniLM-L6-v2-onnx
IMAGE_REPO ?= ghcr.io/llmgateway
IMAGE_TAG ?= dev
KIND_CLUSTER ?= llmgw-e2e
# --provenance=false: with an attestation the image is an index that `kind load` cannot import.
DOCKER_BUILD ?= docker buildx build --load --provenance=false
export HF_HUB_OFFLINE := 1

.PHONY: help venv run test test-model bench manifests docs lint images kind-load kind-e2e model system-deps clean

help: ## list the targets (this text)
	@echo "llmgateway: make TARGET [VAR=value ...]"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: PORT=$(PORT) (gateway), LLMGW_REDIS_PORT=$${LLMGW_REDIS_PORT:-6379} (Redis), CONFIG=$(CONFIG),"
	@echo "  EXPORT=$(EXPORT) (0: no torch/exporter), IMAGE_REPO=$(IMAGE_REPO), IMAGE_TAG=$(IMAGE_TAG), KIND_CLUSTER=$(KIND_CLUSTER)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "==> installing the Python environment into $(VENV) (first time only: a few minutes; ~2.4 GB with the model"
	@echo "    exporter's torch, ~1.1 GB with EXPORT=0). pip reports each package as it goes."
	@# torch first: the CPU wheel of 2.13.0 (otherwise pip pulls GBs of CUDA), needed only to export the model.
	$(if $(filter 1,$(EXPORT)),$(BIN)/pip install --progress-bar on torch==2.13.0)
	$(BIN)/pip install --progress-bar on -e '.[$(EXTRAS)]'
	@# botocore (the `aws` extra, ElastiCache IAM tokens) pins python-dateutil<3 while kubernetes needs >=3; both work
	@# with dateutil 4 at run time, so the tests get botocore without letting pip downgrade dateutil.
	$(BIN)/pip install --no-deps 'botocore>=1.34' jmespath
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP) ## create .venv and install the project (EXPORT=0: without torch)

system-deps: ## apt packages the Redis Stack binaries need (libssl1.1)
	@bash .ci/system-deps.sh

# The local embedding model exported to ONNX once (git-ignored), and again when the export format changed (an older
# export would load but miss what the current semantic cache needs).
MODEL_CURRENT := import json, sys; from llmgw_sidecar.embeddings.export import FORMAT, MANIFEST; \
  m = json.load(open("$(MODEL_DIR)/" + MANIFEST)); sys.exit(m.get("format") != FORMAT or not {"int8", "pair"} <= set(m.get("files", {})))
model: $(STAMP) ## export the local embedding model to .cache/models (once, again after a format change)
	@$(BIN)/python -c '$(MODEL_CURRENT)' 2>/dev/null || { \
	  if [ "$(EXPORT)" = 1 ]; then $(BIN)/llmgw-sidecar export-model --out $(MODEL_DIR) --int8 --force; \
	  else echo "no current exported model in $(MODEL_DIR) and EXPORT=0: copy one there (see README) or use an openai embedding config" >&2; exit 2; fi; }

run: system-deps $(STAMP) model ## Redis Stack + the gateway on 127.0.0.1:4000 (Ctrl-C stops both)
	@$(BIN)/python -m llmgw_sidecar.devrun --config $(CONFIG) --port $(PORT) --dir .data/redis

test: $(STAMP) ## ruff, mypy and the whole test suite (own ports and folders: works while make run runs)
	@bash .ci/system-deps.sh --test
	$(BIN)/ruff check .
	$(BIN)/python -m mypy
	@$(MAKE) --no-print-directory test-model
	$(BIN)/python -m pytest

# PASSIVE: torch's idle OpenMP threads sleep instead of spinning on cores that other work (CI's API server build)
# could use; the weights do not depend on it.
test-model: $(STAMP) ## the tests' exported model in .cache/test-models (about 15 minutes the first time: the static model is distilled, the pair model trained)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -c 'import sys; sys.path.insert(0, "."); from tests.semantic.conftest import ensure_model; ensure_model()'

bench: system-deps $(STAMP) model ## benchmarks (print JSON)
	$(BIN)/python bench/sidecar_bench.py

manifests: $(STAMP) ## re-render manifests/install.yaml from the chart
	$(BIN)/python -m llmgw_operator.render_manifests > manifests/install.yaml

# Regenerate the reference sections that tests keep in sync with the code.
docs: $(STAMP) ## regenerate the reference tables in docs/
	$(BIN)/python -m llmgw_sidecar.config_docs --write docs/configuration.md
	$(BIN)/python -m llmgw_sidecar.metrics_docs --write docs/metrics.md
	$(BIN)/python -m llmgw_operator.crd_docs > docs/crd.md

lint: $(STAMP) ## ruff and mypy (no tests)
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

images: ## docker build IMAGE_REPO/{operator,sidecar}:IMAGE_TAG (default tag dev)
	$(DOCKER_BUILD) -f sidecar/Dockerfile --target sidecar -t $(IMAGE_REPO)/sidecar:$(IMAGE_TAG) .
	$(DOCKER_BUILD) -f operator/Dockerfile -t $(IMAGE_REPO)/operator:$(IMAGE_TAG) .

kind-load: images ## make images, then load them into the kind cluster KIND_CLUSTER
	kind load docker-image --name $(KIND_CLUSTER) $(IMAGE_REPO)/sidecar:$(IMAGE_TAG) $(IMAGE_REPO)/operator:$(IMAGE_TAG)

kind-e2e: ## the end-to-end test on kind (needs docker, kind, kubectl, helm)
	bash tests/e2e/kind.sh

clean: ## remove .venv, .data and .cache
	rm -rf $(VENV) .data .cache
