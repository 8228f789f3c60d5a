#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, then the
# unit and cross-crate tests. CI runs this script through .ci/run.
set -euo pipefail

cd "$(dirname "$0")/.."

# Stops with an install hint when `cargo SUBCOMMAND` is not available.
require_cargo_subcommand() {
    local subcommand=$1 component=$2
    if ! cargo "$subcommand" --version >/dev/null 2>&1; then
        echo "scripts/test.sh: cargo $subcommand is missing. Install it with: rustup component add $component" >&2
        exit 1
    fi
}

# Outside services for the tests. start_services prepares them and exports
# what the tests need, and stop_services stops them when the script exits,
# also after a failure.
#
# The operator tests start their own etcd, kube-apiserver and
# kube-controller-manager on loopback; this finds (or builds once, into a
# cache outside the checkout) those binaries and exports their directory.
# They also need openssl, for the test certificates, and curl. The replica
# tests start their own redis-server processes on free loopback ports, from
# Debian's package.
start_services() {
    local missing=()
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    if ((${#missing[@]} > 0)); then
        echo "scripts/test.sh: installing ${missing[*]}" >&2
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >&2
    fi
    local assets
    assets=$(bash scripts/envtest-assets.sh | tail -n 1)
    export KUBEBUILDER_ASSETS=$assets
    PARLEY_REDIS_SERVER=$(command -v redis-server)
    export PARLEY_REDIS_SERVER
}

stop_services() {
    :
}

require_cargo_subcommand fmt rustfmt
require_cargo_subcommand clippy clippy

test_output=""

clean_up() {
    stop_services
    if [[ -n "$test_output" ]]; then
        rm -f -- "$test_output"
    fi
}

trap clean_up EXIT
start_services

cargo fmt --check
cargo clippy --workspace --all-targets -- -D warnings
# The Helm chart and the objects the operator renders: lint, schemas, checkov.
bash scripts/chart-check.sh

# --no-fail-fast runs every test binary even after one fails, so a single run
# reports every failure. cargo test prints one "test result" line per test
# binary. The last ones belong to doc-test runs, which may contain no test, so
# the totals line at the end states what ran in the whole workspace.
test_output=$(mktemp)
test_status=0
cargo test --workspace --no-fail-fast | tee "$test_output" || test_status=$?

# The quick benchmark profile, in a debug build, keeps the benchmark harness
# working. It fails when a benchmark cannot run or a message was lost,
# repeated or skipped, never on a speed figure.
bench_status=0
cargo run -p parley-bench -- run --profile quick --out target/bench-quick >/dev/null || bench_status=$?

awk '/^test result:/ { runs++; passed += $4; failed += $6 }
    END { if (runs > 0) printf "tests: %d passed, %d failed\n", passed, failed }' "$test_output"
if ((bench_status != 0)); then
    echo "scripts/test.sh: the quick benchmark profile failed (exit status $bench_status)" >&2
    exit "$bench_status"
fi
exit "$test_status"
