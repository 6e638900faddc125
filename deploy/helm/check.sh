#!/usr/bin/env bash
# Lint, render and validate the Helm chart (deploy/helm/nexanest), offline once
# its tools are cached: `make helm-check`, and tests/deploy/test_helm.py in CI.
#
#   deploy/helm/check.sh [OUT_DIR]
#   deploy/helm/check.sh tools      install the tools and schemas only
#
# 1. Installs helm and kubeconform with `go install` (the Go module proxy) into
#    $NEXANEST_CACHE_DIR/helm-tools/<versions>/bin, and the JSON schemas of the
#    built-in Kubernetes kinds from the PyPI package kubernetes-validate; each
#    only when missing, so a second run installs nothing.
# 2. For each value set, `helm lint --strict` and `helm template` into
#    OUT_DIR/<set>.yaml (default: a temporary folder), then `kubeconform -strict`
#    of every rendered object against those schemas and the operators' CRD
#    schemas kept in deploy/helm/schemas/crds (SOURCES.md there). An object
#    without a schema fails the check.
#
# The value sets: small (values.yaml), production (values-production.yaml),
# production-scram (production with the Strimzi listener on SASL/SCRAM and its
# KafkaUsers) and inline-secret (small, the Secret rendered from install-time
# values instead of an existing one; the values are dummies made up here) and
# external-sasl (small, an existing cluster over SASL_SSL with the users'
# credentials and its CA from Secrets, KEDA logging in as the consumer).
set -euo pipefail
# shellcheck source=deploy/local/lib.sh
source "$(dirname "$0")/../local/lib.sh"
SERVICE_NAME=helm

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
SCHEMA_PACKAGE_VERSION=1.37.0  # kubernetes-validate: the schemas of Kubernetes 1.37
KUBERNETES_VERSION=1.37.0

CHART="$REPO_DIR/deploy/helm/nexanest"
CRD_SCHEMAS="$REPO_DIR/deploy/helm/schemas/crds"
TOOLS="$CACHE_DIR/helm-tools/helm-$HELM_VERSION-kubeconform-$KUBECONFORM_VERSION"
SCHEMAS="$CACHE_DIR/helm-tools/kubernetes-validate-$SCHEMA_PACKAGE_VERSION"
HELM="$TOOLS/bin/helm"
KUBECONFORM="$TOOLS/bin/kubeconform"

install_tools() {
  mkdir -p "$TOOLS/bin"
  # One installer at a time: CI starts one in the background early
  # (`check.sh tools`) and the test may arrive while it still compiles.
  exec 9>"$CACHE_DIR/helm-tools/.install.lock"
  flock 9
  # Go's own install location, for a shell whose PATH lacks it.
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go is needed to install helm and kubeconform"
  if [ ! -x "$HELM" ]; then
    log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (a few minutes, once)"
    GOBIN="$TOOLS/bin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  if [ ! -x "$KUBECONFORM" ]; then
    log "go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION (once)"
    GOBIN="$TOOLS/bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  fi
}

# The built-in kinds' schemas from the kubernetes-validate wheel: only the
# strict set of our Kubernetes version, with its $refs made file-relative.
install_schemas() {
  local dir="$SCHEMAS/v$KUBERNETES_VERSION-local-strict"
  [ -f "$SCHEMAS/.complete" ] && return 0
  log "kubernetes-validate==$SCHEMA_PACKAGE_VERSION from PyPI: the Kubernetes $KUBERNETES_VERSION schemas (once)"
  rm -rf "$SCHEMAS" && mkdir -p "$SCHEMAS/wheel"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$SCHEMAS/wheel" \
    "kubernetes-validate==$SCHEMA_PACKAGE_VERSION"
  python3 - "$SCHEMAS/wheel"/kubernetes_validate-*.whl "$dir" "v$KUBERNETES_VERSION-local-strict" <<'PY'
import json, pathlib, sys, zipfile
wheel, out, wanted = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
prefix = f"kubernetes_validate/kubernetes-json-schema/{wanted}/"
out.mkdir(parents=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names:
        sys.exit(f"{wanted} is not in {wheel}")
    for name in names:
        # The package resolves its "$id" URLs and "/api/_definitions.json" refs
        # itself; kubeconform reads files: no $id (the file is the base), refs
        # relative to the file.
        schema = json.loads(z.read(name).decode().replace('"/api/_definitions.json#', '"_definitions.json#'))
        schema.pop("$id", None)
        (out / name[len(prefix):]).write_text(json.dumps(schema))
PY
  rm -rf "$SCHEMAS/wheel"
  touch "$SCHEMAS/.complete"
}

render() {  # render NAME ARGS...: lint and template one value set into $OUT/NAME.yaml
  local name=$1
  shift
  "$HELM" lint --strict --kube-version "$KUBERNETES_VERSION" "$CHART" "$@" >"$OUT/$name.lint" 2>&1 || { cat "$OUT/$name.lint"; die "helm lint --strict failed for $name"; }
  "$HELM" template nexanest "$CHART" --namespace nexanest --kube-version "$KUBERNETES_VERSION" "$@" >"$OUT/$name.yaml"
  "$KUBECONFORM" -strict -summary -kubernetes-version "$KUBERNETES_VERSION" \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local-strict/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$CRD_SCHEMAS/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$OUT/$name.yaml" | sed "s/^/[$name] /"
}

main() {
  if [ "${1:-}" = tools ]; then  # only install the tools and schemas (CI does it early, in the background)
    ensure_dirs
    install_tools
    install_schemas
    return 0
  fi
  OUT=${1:-}
  if [ -z "$OUT" ]; then
    OUT=$(mktemp -d)
    trap 'rm -rf "$OUT"' EXIT
  fi
  mkdir -p "$OUT"
  ensure_dirs
  install_tools
  install_schemas
  local prod=(-f "$CHART/values-production.yaml")
  render small
  render production "${prod[@]}"
  render production-scram "${prod[@]}" --set kafka.strimzi.authentication=scram-sha-512
  local inline=(--set secrets.existingSecret=)
  local key
  for key in NEXANEST_SERVICES__AUTH_DSN NEXANEST_SERVICES__PORTFOLIO_DSN NEXANEST_SERVICES__PORTFOLIO_SNAPSHOTS_DSN \
    NEXANEST_SERVICES__MARKET_DATA_DSN NEXANEST_SERVICES__NOTIFICATIONS_DSN NEXANEST_SERVICES__ANALYTICS_DSN \
    NEXANEST_SERVICES__ANALYTICS_TIMESCALE_DSN NEXANEST_REDIS__URL NEXANEST_SERVICES__TOKEN_SECRET \
    NEXANEST_TIMESCALE__DSN NEXANEST_TIMESCALE__ADMIN_DSN NEXANEST_POSTGRES__AUTH_DSN \
    NEXANEST_POSTGRES__PORTFOLIO_DSN NEXANEST_POSTGRES__ANALYTICS_DSN NEXANEST_POSTGRES__NOTIFICATIONS_DSN; do
    inline+=(--set "secrets.values.$key=dummy-$key")
  done
  render inline-secret "${inline[@]}"
  render external-sasl --set kafka.external.securityProtocol=SASL_SSL --set kafka.external.credentialsSecret=nexanest-kafka \
    --set kafka.external.caSecret=nexanest-kafka-ca --set consumer.autoscaling.enabled=true --set producer.enabled=true
  log "chart linted, rendered and validated: $OUT"
}

main "$@"
