#!/usr/bin/env bash
# Checks that the test binaries from scripts/envtest-assets.sh form a working
# control plane: starts etcd, kube-apiserver and kube-controller-manager on
# free loopback ports, then uses the API with curl. It creates a
# CustomResourceDefinition and a custom resource, checks that the schema
# rejects an invalid one, applies a ConfigMap twice with server-side apply,
# and checks that the garbage collector and the namespace controller delete
# objects. Every process and temporary file is removed on exit. Exits
# non-zero when a check fails.
#
# Needs curl, openssl and python3 (to pick ports and read JSON). The first run
# may build the binaries, which takes several minutes.
set -euo pipefail

script_name=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd -P)

# Seconds to wait for a server to become ready or a new resource to be served.
readonly START_TIMEOUT=90
# Seconds to wait for a controller to delete an object.
readonly DELETE_TIMEOUT=90

checks_passed=0
current_check=""
work_dir=""
pids=()
names=()

log() {
    echo "$script_name: $*" >&2
}

fail() {
    echo "$script_name: FAIL: ${current_check:+$current_check: }$*" >&2
    exit 1
}

begin_check() {
    current_check=$1
}

pass_check() {
    echo "ok: $current_check"
    checks_passed=$((checks_passed + 1))
    current_check=""
}

# Prints the start of a crash report (a Go fatal error or panic, or a klog
# fatal line) from the log of NAME, or the last lines of the log when it has
# none. The end of a crash report is a goroutine dump that does not say why
# the process crashed.
print_log_excerpt() {
    local name=$1 log_file=$2 crash_line
    crash_line=$(grep -n -m 1 -E '^(fatal error|panic):|^F[0-9]{4} ' "$log_file" | cut -d: -f1 || true)
    if [[ -n "$crash_line" ]]; then
        echo "---- crash report in the $name log, from line $crash_line ----" >&2
        sed -n "${crash_line},$((crash_line + 29))p" "$log_file" >&2
    else
        echo "---- last 25 lines of the $name log ----" >&2
        tail -n 25 "$log_file" >&2
    fi
}

# Stops every started process, newest first, prints an excerpt of its log when
# the script failed, and removes the temporary directory.
clean_up() {
    local status=$? index pid name
    # Clean up as far as possible even when a step here fails.
    set +e
    for ((index = ${#pids[@]} - 1; index >= 0; index--)); do
        pid=${pids[index]}
        name=${names[index]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "$name (pid $pid) did not stop within 10 s of SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        wait "$pid" 2>/dev/null || true
        if [[ $status -ne 0 && -f "$work_dir/$name.log" ]]; then
            print_log_excerpt "$name" "$work_dir/$name.log"
        fi
    done
    if [[ -n "$work_dir" ]]; then
        rm -rf -- "$work_dir"
    fi
    if [[ $status -eq 0 ]]; then
        echo "envtest smoke: $checks_passed passed, 0 failed"
    elif [[ $status -eq 130 || $status -eq 143 ]]; then
        echo "envtest smoke: interrupted after $checks_passed passed checks" >&2
    else
        echo "envtest smoke: $checks_passed passed, 1 failed" >&2
    fi
    exit "$status"
}

trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in curl openssl python3; do
    command -v "$tool" >/dev/null || fail "$tool not found. Install it (apt-get install $tool) and run this script again."
done

# Starts NAME with the given command in the background, with its output in
# $work_dir/NAME.log, and records its pid for clean_up.
start_process() {
    local name=$1
    shift
    "$@" >"$work_dir/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
    log "started $name (pid $!)"
}

# Fails when the process NAME, started by start_process, has exited.
require_running() {
    local name=$1 index
    for index in "${!names[@]}"; do
        if [[ "${names[index]}" == "$name" ]] && ! kill -0 "${pids[index]}" 2>/dev/null; then
            fail "$name exited early; its log follows."
        fi
    done
}

# Prints COUNT distinct TCP ports on 127.0.0.1 that were free a moment ago.
# NOTE: another program can take a port before the server binds it. The
# server then exits, and the script fails and prints the server's log.
free_ports() {
    python3 - "$1" <<'EOF'
import socket
import sys

sockets = []
for _ in range(int(sys.argv[1])):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sockets.append(sock)
print(" ".join(str(sock.getsockname()[1]) for sock in sockets))
for sock in sockets:
    sock.close()
EOF
}

# Prints the value at a dotted PATH (for example status.conditions) in the
# JSON file FILE. Lists of objects with a "type" key can be indexed by type,
# as in status.conditions.Established.status. Prints nothing when the path is
# missing.
json_value() {
    python3 - "$1" "$2" <<'EOF'
import json
import sys

value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict) and item.get("type") == key), None)
    elif isinstance(value, dict):
        value = value.get(key)
    if value is None:
        sys.exit(0)
print(value if not isinstance(value, (dict, list)) else json.dumps(value))
EOF
}

# Sends METHOD PATH to the API server as the admin user, with the body from
# BODY_FILE of type CONTENT_TYPE if given. Writes the response body to
# $response_file and prints the HTTP status code.
api_request() {
    local method=$1 path=$2 content_type=${3:-} body_file=${4:-}
    local arguments=(
        --silent --show-error
        --cacert "$work_dir/pki/ca.crt"
        --header "@$work_dir/auth-header"
        --request "$method"
        --output "$response_file"
        --write-out '%{http_code}'
    )
    if [[ -n "$body_file" ]]; then
        arguments+=(--header "Content-Type: $content_type" --data-binary "@$body_file")
    fi
    curl "${arguments[@]}" "https://127.0.0.1:$apiserver_port$path"
}

# Like api_request, but fails unless the status code is one of EXPECTED
# (a space-separated list).
api_expect() {
    local expected=$1 status
    shift
    if ! status=$(api_request "$@"); then
        # A crashed API server closes the connection. Give it a moment to exit
        # so that the message names the crash.
        sleep 1
        require_running kube-apiserver
        fail "curl $1 $2 failed."
    fi
    if [[ " $expected " != *" $status "* ]]; then
        fail "$1 $2 returned HTTP $status, expected $expected. Response: $(head -c 2000 "$response_file")"
    fi
}

# Polls the API server until GET PATH returns HTTP 404.
wait_until_deleted() {
    local path=$1 deadline=$((SECONDS + DELETE_TIMEOUT)) status
    while true; do
        status=$(api_request GET "$path") || fail "curl GET $path failed."
        [[ "$status" == 404 ]] && return 0
        [[ "$status" == 200 ]] || fail "GET $path returned HTTP $status while waiting for its deletion. Response: $(head -c 2000 "$response_file")"
        ((SECONDS < deadline)) || fail "$path still exists ${DELETE_TIMEOUT} s after its deletion. Last response: $(head -c 2000 "$response_file")"
        sleep 0.5
    done
}

# Writes the certificate authority, the serving certificate for 127.0.0.1,
# the service account key and the admin token.
write_credentials() {
    local pki=$work_dir/pki
    mkdir -p "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=envtest-smoke-ca" \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null ||
        fail "openssl could not create the test certificate authority."
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null ||
        fail "openssl could not create the API server key."
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 1 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null ||
        fail "openssl could not sign the API server certificate."
    openssl genrsa -out "$pki/service-account.key" 2048 2>/dev/null ||
        fail "openssl could not create the service account key."

    admin_token=$(openssl rand -hex 24)
    # Static token file columns: token, user name, uid, groups.
    printf '%s,envtest-admin,envtest-admin,"system:masters"\n' "$admin_token" >"$work_dir/tokens.csv"
    # curl reads the header from a file so that the token stays out of the
    # process list.
    printf 'Authorization: Bearer %s\n' "$admin_token" >"$work_dir/auth-header"
    chmod 600 "$work_dir/tokens.csv" "$work_dir/auth-header"

    cat >"$work_dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $pki/ca.crt
users:
- name: envtest-admin
  user:
    token: $admin_token
contexts:
- name: envtest
  context:
    cluster: envtest
    user: envtest-admin
current-context: envtest
EOF
    chmod 600 "$work_dir/kubeconfig"
}

start_etcd() {
    start_process etcd "$assets/etcd" \
        --name envtest \
        --data-dir "$work_dir/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "envtest=http://127.0.0.1:$etcd_peer_port"

    local deadline=$((SECONDS + START_TIMEOUT))
    until curl --silent --fail "http://127.0.0.1:$etcd_client_port/health" 2>/dev/null | grep -q '"health":"true"'; do
        require_running etcd
        ((SECONDS < deadline)) || fail "etcd did not report healthy within ${START_TIMEOUT} s."
        sleep 0.2
    done
}

start_apiserver() {
    start_process kube-apiserver "$assets/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$etcd_client_port" \
        --bind-address 127.0.0.1 \
        --advertise-address 127.0.0.1 \
        --secure-port "$apiserver_port" \
        --tls-cert-file "$work_dir/pki/apiserver.crt" \
        --tls-private-key-file "$work_dir/pki/apiserver.key" \
        --client-ca-file "$work_dir/pki/ca.crt" \
        --token-auth-file "$work_dir/tokens.csv" \
        --authorization-mode RBAC \
        --service-cluster-ip-range 10.0.0.0/24 \
        --service-account-issuer https://kubernetes.default.svc \
        --service-account-key-file "$work_dir/pki/service-account.key" \
        --service-account-signing-key-file "$work_dir/pki/service-account.key"

    local deadline=$((SECONDS + START_TIMEOUT)) status
    while true; do
        require_running kube-apiserver
        status=$(api_request GET /readyz 2>/dev/null) || status=000
        [[ "$status" == 200 ]] && break
        ((SECONDS < deadline)) || fail "kube-apiserver /readyz did not return 200 within ${START_TIMEOUT} s (last: HTTP $status)."
        sleep 0.5
    done
}

start_controller_manager() {
    # --port 0 turns off the deprecated insecure port, which would otherwise
    # listen on 0.0.0.0:10252.
    start_process kube-controller-manager "$assets/kube-controller-manager" \
        --kubeconfig "$work_dir/kubeconfig" \
        --authentication-kubeconfig "$work_dir/kubeconfig" \
        --authorization-kubeconfig "$work_dir/kubeconfig" \
        --controllers namespace,garbagecollector \
        --leader-elect=false \
        --bind-address 127.0.0.1 \
        --secure-port "$controller_manager_port" \
        --port 0 \
        --cert-dir "$work_dir/controller-manager-certs"

    # The controller manager serves a self-signed certificate, hence --insecure.
    local deadline=$((SECONDS + START_TIMEOUT))
    until [[ "$(curl --silent --insecure "https://127.0.0.1:$controller_manager_port/healthz" 2>/dev/null)" == ok ]]; do
        require_running kube-controller-manager
        ((SECONDS < deadline)) || fail "kube-controller-manager /healthz did not return ok within ${START_TIMEOUT} s."
        sleep 0.5
    done
}

# ---- Set up ----

begin_check "find the envtest binaries"
assets_output=$("$script_dir/envtest-assets.sh") || fail "scripts/envtest-assets.sh failed; its messages above name the cause."
assets=$(tail -n 1 <<<"$assets_output")
for binary in etcd kube-apiserver kube-controller-manager; do
    [[ -x "$assets/$binary" ]] || fail "$assets/$binary is missing or not executable."
done
log "using the binaries in $assets"
pass_check

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/envtest-smoke.XXXXXX")
response_file=$work_dir/response.json
read -r etcd_client_port etcd_peer_port apiserver_port controller_manager_port <<<"$(free_ports 4)"
write_credentials

begin_check "start etcd on 127.0.0.1:$etcd_client_port"
start_etcd
pass_check

begin_check "start kube-apiserver on 127.0.0.1:$apiserver_port"
start_apiserver
api_expect 200 GET /version
[[ "$(json_value "$response_file" gitVersion)" == v1.20.2 ]] ||
    fail "/version reports $(json_value "$response_file" gitVersion), expected v1.20.2."
pass_check

begin_check "start kube-controller-manager on 127.0.0.1:$controller_manager_port"
start_controller_manager
pass_check

# ---- Custom resources ----

begin_check "create a CustomResourceDefinition"
cat >"$work_dir/crd.json" <<'EOF'
{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.smoke.parley.test"},
  "spec": {
    "group": "smoke.parley.test",
    "scope": "Cluster",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
    "versions": [{
      "name": "v1",
      "served": true,
      "storage": true,
      "schema": {"openAPIV3Schema": {
        "type": "object",
        "properties": {
          "spec": {
            "type": "object",
            "properties": {"size": {"type": "integer", "minimum": 1}},
            "required": ["size"]
          }
        }
      }}
    }]
  }
}
EOF
api_expect 201 POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions application/json "$work_dir/crd.json"
deadline=$((SECONDS + START_TIMEOUT))
while true; do
    api_expect 200 GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.parley.test
    [[ "$(json_value "$response_file" status.conditions.Established.status)" == True ]] && break
    ((SECONDS < deadline)) || fail "the CustomResourceDefinition was not Established within ${START_TIMEOUT} s."
    sleep 0.5
done
pass_check

begin_check "create and list a custom resource"
cat >"$work_dir/widget.json" <<'EOF'
{"apiVersion": "smoke.parley.test/v1", "kind": "Widget", "metadata": {"name": "first"}, "spec": {"size": 3}}
EOF
# The resource becomes servable a moment after Established, so a 404 is retried.
deadline=$((SECONDS + START_TIMEOUT))
while true; do
    status=$(api_request POST /apis/smoke.parley.test/v1/widgets application/json "$work_dir/widget.json") ||
        fail "curl POST /apis/smoke.parley.test/v1/widgets failed."
    [[ "$status" == 201 ]] && break
    [[ "$status" == 404 ]] || fail "POST /apis/smoke.parley.test/v1/widgets returned HTTP $status. Response: $(head -c 2000 "$response_file")"
    ((SECONDS < deadline)) || fail "the widgets resource was not served within ${START_TIMEOUT} s."
    sleep 0.5
done
api_expect 200 GET /apis/smoke.parley.test/v1/widgets
[[ "$(json_value "$response_file" kind)" == WidgetList ]] || fail "the list response has kind $(json_value "$response_file" kind), expected WidgetList."
python3 - "$response_file" <<'EOF' || fail "the widget list does not contain exactly the widget 'first' with spec.size 3: $(head -c 2000 "$response_file")"
import json
import sys

items = json.load(open(sys.argv[1]))["items"]
assert [(item["metadata"]["name"], item["spec"]["size"]) for item in items] == [("first", 3)], items
EOF
pass_check

begin_check "reject a custom resource that violates the schema"
cat >"$work_dir/invalid-widget.json" <<'EOF'
{"apiVersion": "smoke.parley.test/v1", "kind": "Widget", "metadata": {"name": "invalid"}, "spec": {"size": 0}}
EOF
api_expect 422 POST /apis/smoke.parley.test/v1/widgets application/json "$work_dir/invalid-widget.json"
pass_check

# ---- Server-side apply ----

begin_check "server-side apply a ConfigMap twice"
cat >"$work_dir/namespace-apply.json" <<'EOF'
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smoke-apply"}}
EOF
api_expect 201 POST /api/v1/namespaces application/json "$work_dir/namespace-apply.json"
cat >"$work_dir/configmap.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: smoke-apply
data:
  greeting: hello
EOF
apply_path="/api/v1/namespaces/smoke-apply/configmaps/applied?fieldManager=test"
api_expect 201 PATCH "$apply_path" application/apply-patch+yaml "$work_dir/configmap.yaml"
first_version=$(json_value "$response_file" metadata.resourceVersion)
[[ "$(json_value "$response_file" data.greeting)" == hello ]] || fail "the applied ConfigMap lacks data.greeting=hello."
[[ "$(json_value "$response_file" metadata.managedFields)" == *'"manager": "test"'* ]] ||
    fail "the applied ConfigMap has no managedFields entry for the field manager 'test'."
api_expect 200 PATCH "$apply_path" application/apply-patch+yaml "$work_dir/configmap.yaml"
second_version=$(json_value "$response_file" metadata.resourceVersion)
[[ -n "$first_version" && "$first_version" == "$second_version" ]] ||
    fail "the second apply changed resourceVersion from '$first_version' to '$second_version', expected no change."
log "resourceVersion after the first apply: $first_version, after the second: $second_version"
pass_check

# ---- Controllers ----

begin_check "garbage collector deletes a dependent of a deleted owner"
cat >"$work_dir/owner.json" <<'EOF'
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": "smoke-apply"}}
EOF
api_expect 201 POST /api/v1/namespaces/smoke-apply/configmaps application/json "$work_dir/owner.json"
owner_uid=$(json_value "$response_file" metadata.uid)
cat >"$work_dir/dependent.json" <<EOF
{"apiVersion": "v1", "kind": "ConfigMap",
 "metadata": {"name": "dependent", "namespace": "smoke-apply",
   "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "$owner_uid"}]}}
EOF
api_expect 201 POST /api/v1/namespaces/smoke-apply/configmaps application/json "$work_dir/dependent.json"
api_expect 200 DELETE /api/v1/namespaces/smoke-apply/configmaps/owner
wait_until_deleted /api/v1/namespaces/smoke-apply/configmaps/dependent
pass_check

begin_check "namespace controller deletes a namespace with a ConfigMap"
cat >"$work_dir/namespace-delete.json" <<'EOF'
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smoke-delete"}}
EOF
api_expect 201 POST /api/v1/namespaces application/json "$work_dir/namespace-delete.json"
cat >"$work_dir/content.json" <<'EOF'
{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "content", "namespace": "smoke-delete"}, "data": {"key": "value"}}
EOF
api_expect 201 POST /api/v1/namespaces/smoke-delete/configmaps application/json "$work_dir/content.json"
api_expect 200 DELETE /api/v1/namespaces/smoke-delete
[[ "$(json_value "$response_file" status.phase)" == Terminating ]] ||
    fail "the deleted namespace is in phase $(json_value "$response_file" status.phase), expected Terminating."
wait_until_deleted /api/v1/namespaces/smoke-delete
api_expect 404 GET /api/v1/namespaces/smoke-delete/configmaps/content
pass_check

begin_check "all servers still running"
require_running etcd
require_running kube-apiserver
require_running kube-controller-manager
pass_check
