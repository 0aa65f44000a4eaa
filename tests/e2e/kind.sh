#!/usr/bin/env bash
# End-to-end test on a kind cluster: build both images, helm install, one gateway per Redis mode, inject the demo app,
# ask the same question twice from inside the pod (the second answer must be a cache hit), scrape /metrics, delete the
# gateway and check that everything it owned is gone.
#
#   make kind-e2e                         (or: bash tests/e2e/kind.sh)
# Environment:
#   KIND_CLUSTER_NAME  cluster name (default llmgw-e2e)
#   KIND_NODE_IMAGE    node image (default: the one pinned by digest in kind-config.yaml, built for kind v0.25.0)
#   MODES              Redis modes to test (default "standalone sentinel cluster")
#   KEEP_CLUSTER=1     keep the cluster afterwards (it is reused by the next run if it exists; every run uses its own
#                      namespaces, so a rerun never meets one still terminating)
#   TIMEOUT            seconds to wait for each readiness step (default 300)
# Needs: docker (with buildx), kind (v0.25.x: the node images are built for it), kubectl, helm on PATH. Uses a mock model: no API key, no network beyond image pulls.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-llmgw-e2e}"
MODES="${MODES:-standalone sentinel cluster}"
TIMEOUT="${TIMEOUT:-300}"
RUN_ID="$(date +%s)"
TAG="e2e-$RUN_ID"
KIND_VERSION="v0.25."  # the kind release the pinned node images in kind-config.yaml were built for
# The gateway's Redis deadline: the default 50 ms is for a pod next to its Redis on a quiet node; a busy 2-vCPU CI
# runner running kind, three Redis modes and the operator needs more, or cache writes time out and hits become misses.
REDIS_TIMEOUT_MS="${REDIS_TIMEOUT_MS:-1000}"
RELEASE="llmgateway"
SYSTEM_NS="llmgateway-system"
SIDECAR_REPO="ghcr.io/llmgateway/sidecar"
OPERATOR_REPO="ghcr.io/llmgateway/operator"
GATEWAY="chat"  # the gateway name manifests/examples/demo-app.yaml asks for
CREATED_CLUSTER=0
HAVE_CLUSTER=0
CURRENT_NS=""

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() {
  printf '\n\033[31mFAIL: %s\033[0m\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (needed: docker kind kubectl helm)"
  done
}

diagnostics() {
  log "diagnostics"
  kubectl get pods -A -o wide || true
  kubectl get llmgateways -A -o wide || true
  kubectl -n "$SYSTEM_NS" logs deploy/"$RELEASE" --all-containers --tail=200 || true
  if [[ -n "$CURRENT_NS" ]]; then
    kubectl -n "$CURRENT_NS" describe llmgateway "$GATEWAY" || true
    kubectl -n "$CURRENT_NS" get events --sort-by=.lastTimestamp | tail -n 40 || true
    kubectl -n "$CURRENT_NS" logs deploy/demo-app --all-containers --tail=100 || true
  fi
}

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && "$HAVE_CLUSTER" == "1" ]]; then
    diagnostics
  fi
  if [[ "${KEEP_CLUSTER:-0}" != "1" && "$CREATED_CLUSTER" == "1" ]]; then
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  if [[ $rc -eq 0 ]]; then
    printf '\n\033[32mPASS: kind end-to-end (%s)\033[0m\n' "$MODES"
  fi
  exit "$rc"
}
trap cleanup EXIT

# Poll a command until it succeeds; fail with a message after TIMEOUT seconds.
wait_for() {
  local what="$1"
  shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for: $what"
    sleep 3
  done
}

create_cluster() {
  local clusters kind_version
  kind_version="$(kind version 2>/dev/null || true)"
  [[ "$kind_version" == *" $KIND_VERSION"* ]] ||
    echo "warning: kind-config.yaml pins node images built for kind ${KIND_VERSION}x; this is: ${kind_version:-unknown}" >&2
  # Not `kind get clusters | grep -q`: grep exits at the first match, kind gets SIGPIPE, and under pipefail the
  # pipeline fails, so an existing cluster would look missing.
  clusters="$(kind get clusters 2>/dev/null || true)"
  if grep -qx "$CLUSTER" <<<"$clusters"; then
    log "reusing cluster $CLUSTER"
  else
    log "creating cluster $CLUSTER"
    local args=(create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s)
    if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
      args+=(--image "$KIND_NODE_IMAGE")
    fi
    kind "${args[@]}"
    CREATED_CLUSTER=1
  fi
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  HAVE_CLUSTER=1
}

build_images() {
  log "building images ($TAG)"
  # BuildKit skips stages the target does not need (the embedding-model export with torch). --provenance=false: with
  # an attestation the image is an index that `kind load` cannot import (newer Docker adds one by default).
  docker buildx build --load --provenance=false -f "$ROOT/sidecar/Dockerfile" --target sidecar \
    -t "$SIDECAR_REPO:$TAG" "$ROOT"
  docker buildx build --load --provenance=false -f "$ROOT/operator/Dockerfile" -t "$OPERATOR_REPO:$TAG" "$ROOT"
  kind load docker-image --name "$CLUSTER" "$SIDECAR_REPO:$TAG" "$OPERATOR_REPO:$TAG"
}

install_chart() {
  log "helm install"
  helm upgrade --install "$RELEASE" "$ROOT/charts/llmgateway" \
    --namespace "$SYSTEM_NS" --create-namespace \
    --set operator.image.tag="$TAG" --set sidecar.image.tag="$TAG" \
    --wait --timeout "${TIMEOUT}s"
  kubectl -n "$SYSTEM_NS" rollout status deploy/"$RELEASE" --timeout "${TIMEOUT}s"
  kubectl get mutatingwebhookconfiguration "$RELEASE-$SYSTEM_NS" >/dev/null ||
    fail "the chart did not create its MutatingWebhookConfiguration"
}

apply_gateway() {
  local ns="$1" mode="$2"
  kubectl apply -n "$ns" -f - <<EOF
apiVersion: llmgateway.dev/v1alpha1
kind: LLMGateway
metadata:
  name: $GATEWAY
spec:
  redis:
    mode: $mode
  sidecar:
    redisTimeoutMilliseconds: $REDIS_TIMEOUT_MS
  models:
    - name: demo
      provider: mock
EOF
}

# The question, asked from the app container through the sidecar until the answer comes from the cache (the first
# answer is stored in the background, so an immediate second ask may still miss): at most 10 more asks, 0.5 s apart.
# Prints "<first> <last>" cache headers and fails unless every answer is equal.
ASK_UNTIL_HIT='
import json, os, time, urllib.request
base = os.environ["OPENAI_BASE_URL"]
body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "e2e: what is 6 x 7?"}]}).encode()
def ask():
    req = urllib.request.Request(base + "/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.headers.get("x-llmgw-cache"), json.load(r)["choices"][0]["message"]["content"]
h1, a1 = ask()
for _ in range(10):
    h2, a2 = ask()
    assert a1 == a2, f"answers differ: {a1!r} != {a2!r}"
    if h2 == "hit-exact":
        break
    time.sleep(0.5)
print(h1, h2)
'

# With no operator running, a pod that asks for the gateway is admitted without the sidecar (failurePolicy Ignore);
# once the operator is back, it reports the pod (Event UninjectedPods on the gateway).
test_webhook_down() {
  local ns="$1"
  log "webhook down: pods start uninjected and are reported"
  kubectl -n "$SYSTEM_NS" scale deploy/"$RELEASE" --replicas=0
  wait_for "operator pods to stop" bash -c \
    "[[ -z \"\$(kubectl -n '$SYSTEM_NS' get pods -l app.kubernetes.io/component=operator -o name)\" ]]"
  kubectl -n "$ns" run uninjected-probe --image=python:3.12.8-slim-bookworm --restart=Never \
    --annotations="llmgateway.dev/inject=$GATEWAY" --command -- sleep 3600 ||
    fail "a pod was refused while the webhook was down (failurePolicy must be Ignore)"
  local containers
  containers="$(kubectl -n "$ns" get pod uninjected-probe -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
  [[ " $containers " != *" llmgw-sidecar "* ]] || fail "uninjected-probe got a sidecar although no webhook was up"
  kubectl -n "$SYSTEM_NS" scale deploy/"$RELEASE" --replicas=2
  kubectl -n "$SYSTEM_NS" rollout status deploy/"$RELEASE" --timeout "${TIMEOUT}s"
  wait_for "an UninjectedPods event naming uninjected-probe" bash -c \
    "kubectl -n '$ns' get events --field-selector reason=UninjectedPods -o jsonpath='{.items[*].message}' \
      | grep -q uninjected-probe"
  kubectl -n "$ns" delete pod uninjected-probe --wait=false
}

test_mode() {
  local mode="$1" ns="e2e-$1-$RUN_ID"  # a namespace per run: the last run's may still be terminating
  CURRENT_NS="$ns"
  log "[$mode] gateway"
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  apply_gateway "$ns" "$mode"
  kubectl -n "$ns" wait llmgateway/"$GATEWAY" --for=condition=Ready --timeout "${TIMEOUT}s" ||
    fail "[$mode] gateway never became Ready"

  log "[$mode] demo app"
  kubectl apply -n "$ns" -f "$ROOT/manifests/examples/demo-app.yaml"
  kubectl -n "$ns" rollout status deploy/demo-app --timeout "${TIMEOUT}s" ||
    fail "[$mode] demo app did not start (is the sidecar ready? see its logs below)"
  local pod containers status
  pod="$(kubectl -n "$ns" get pod -l app.kubernetes.io/name=demo-app -o jsonpath='{.items[0].metadata.name}')"
  containers="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
  [[ " $containers " == *" llmgw-sidecar "* ]] || fail "[$mode] sidecar not injected into $pod (containers: $containers)"
  status="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.metadata.annotations.llmgateway\.dev/status}')"
  [[ "$status" == *"\"gateway\":\"$GATEWAY\""* ]] || fail "[$mode] no injection status annotation on $pod"
  echo "injected: $status"

  log "[$mode] same question until it is a cache hit"
  local headers
  headers="$(kubectl -n "$ns" exec "$pod" -c app -- python3 -c "$ASK_UNTIL_HIT")" ||
    fail "[$mode] requests through the sidecar failed"
  echo "x-llmgw-cache: $headers"
  [[ "$headers" == *" hit-exact" ]] || fail "[$mode] second answer was not an exact cache hit (got: $headers)"

  log "[$mode] metrics"
  local metrics
  metrics="$(kubectl -n "$ns" exec "$pod" -c app -- python3 -c \
    'import os, urllib.request as u; print(u.urlopen(os.environ["LLMGW_URL"] + "/metrics", timeout=10).read().decode())')" ||
    fail "[$mode] /metrics not reachable from the app"
  grep -q '^llmgw_requests_total' <<<"$metrics" || fail "[$mode] llmgw_requests_total missing from /metrics"
  grep -q '^llmgw_cache_lookups_total{.*result="hit"' <<<"$metrics" ||
    fail "[$mode] no cache hit counted in /metrics"

  if [[ "$mode" == "${MODES%% *}" ]]; then
    test_webhook_down "$ns"
  fi

  log "[$mode] delete and clean up"
  kubectl -n "$ns" delete deploy/demo-app --wait --timeout "${TIMEOUT}s"
  kubectl -n "$ns" delete llmgateway "$GATEWAY" --wait --timeout "${TIMEOUT}s"
  wait_for "[$mode] objects of the gateway to be garbage-collected" \
    bash -c "[[ -z \"\$(kubectl -n '$ns' get statefulsets,services,configmaps,secrets,poddisruptionbudgets \
      -l llmgateway.dev/gateway=$GATEWAY -o name)\" ]]"
  kubectl delete namespace "$ns" --wait=false >/dev/null
  CURRENT_NS=""
}

main() {
  need docker kind kubectl helm
  create_cluster
  build_images
  install_chart
  local mode
  for mode in $MODES; do
    test_mode "$mode"
  done
}

main "$@"
