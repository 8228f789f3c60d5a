#!/usr/bin/env bash
# Prints the directory that contains the Kubernetes v1.20.2 test binaries
# (kube-apiserver, kube-controller-manager and etcd) that the operator tests
# start on loopback. The directory path is always the last line of stdout, and
# everything else goes to stderr.
#
# The directory is, in order of preference:
#   1. $KUBEBUILDER_ASSETS, if it contains all three executables.
#   2. The cache, ${PARLEY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/envtest}/v1.20.2,
#      if an earlier run of this script completed it.
#   3. The same cache, filled now. No prebuilt Kubernetes binaries can be
#      downloaded, so kube-apiserver and kube-controller-manager are built from
#      the source of Debian bookworm's `kubernetes` package (1.20.2) with
#      Debian's Go 1.19, and etcd is taken from Debian's `etcd-server` package.
#      A cold build took 3.5 to 7 minutes on a 2-core, 24 GB machine and uses
#      about 2 GB of disk while it runs, 240 MB after. It runs apt-get, so it
#      needs root or password-less sudo.
#
# The build happens in a temporary directory beside the cache and is renamed
# into place only after the binaries run, so an interrupted or failed build
# leaves no partial cache, and the next run starts it again.
set -euo pipefail

readonly KUBERNETES_VERSION=v1.20.2
readonly REQUIRED_BINARIES=(kube-apiserver kube-controller-manager etcd)
# Written last into a finished cache directory. A directory without it is
# treated as incomplete.
readonly COMPLETE_MARKER=.build-complete
# Debian's Go for bookworm (1.19), which debian/rules of the kubernetes package
# also puts first in PATH. The build is tested with this Go only, so a newer go
# elsewhere in PATH is not used.
readonly DEBIAN_GO_BIN=/usr/lib/go/bin
readonly DEBIAN_REFLECT2_PACKAGE=golang-github-modern-go-reflect2-dev
readonly DEB_SRC_LIST=/etc/apt/sources.list.d/parley-envtest-deb-src.sources
# Version of the kubernetes source package, set by configure_deb_src.
source_package_version=""
# Process group of the running build step, for clean_up.
child_pid=""

script_name=$(basename "$0")
repo_root=$(cd "$(dirname "$0")/.." && pwd -P)

log() {
    echo "$script_name: $*" >&2
}

fail() {
    echo "$script_name: error: $*" >&2
    exit 1
}

# Succeeds when DIR contains every required binary as an executable file.
has_all_binaries() {
    local dir=$1 binary
    for binary in "${REQUIRED_BINARIES[@]}"; do
        [[ -f "$dir/$binary" && -x "$dir/$binary" ]] || return 1
    done
}

is_complete_cache() {
    local dir=$1
    [[ -f "$dir/$COMPLETE_MARKER" ]] && has_all_binaries "$dir"
}

# Runs a command as root: directly when this script runs as root, otherwise
# through password-less sudo.
run_as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif can_run_as_root; then
        sudo -n "$@"
    else
        fail "'$*' needs root, but this script runs as $(id -un) without password-less sudo. Run it once as root, or point KUBEBUILDER_ASSETS at a directory with ${REQUIRED_BINARIES[*]}."
    fi
}

can_run_as_root() {
    [[ $EUID -eq 0 ]] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }
}

package_lists_updated=false

# Runs apt-get update, at most once per run unless package_lists_updated is
# reset after a change to the apt sources.
update_package_lists() {
    if [[ "$package_lists_updated" == true ]]; then
        return
    fi
    log "running apt-get update"
    run_as_root apt-get -q update >&2 ||
        fail "apt-get update failed. Check the apt sources in /etc/apt and the network, then run this script again."
    package_lists_updated=true
}

# Runs apt-get without prompts. As root, apt downloads as the user _apt, which
# cannot write into the root-owned download directories of this script, so the
# download runs as root instead of printing a warning for every file.
apt_get() {
    local options=(-q -y)
    if [[ $EUID -eq 0 ]]; then
        options+=(-o APT::Sandbox::User=root)
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${options[@]}" "$@"
}

# Prints the deb-src counterpart of every enabled `deb` entry for the release
# CODENAME in the given deb822 (*.sources) files. Each matching stanza is
# copied with its Types set to deb-src and its Suites cut to CODENAME, so the
# entries keep the mirror URIs, components and Signed-By of the machine.
deb822_to_deb_src() {
    local codename=$1
    shift
    awk -v codename="$codename" '
        function flush(    i, count, words, has_deb, has_suite) {
            if (line_count > 0) {
                count = split(types, words, /[ \t]+/)
                for (i = 1; i <= count; i++) if (words[i] == "deb") has_deb = 1
                count = split(suites, words, /[ \t]+/)
                for (i = 1; i <= count; i++) if (words[i] == codename) has_suite = 1
                if (has_deb && has_suite && tolower(enabled) != "no") {
                    for (i = 1; i <= line_count; i++) print lines[i]
                    print ""
                }
            }
            line_count = 0; types = ""; suites = ""; enabled = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^#/ { next }
        {
            field = tolower($1)
            if (field == "types:") { types = $0; sub(/^[^:]*:/, "", types); $0 = "Types: deb-src" }
            else if (field == "suites:") { suites = $0; sub(/^[^:]*:/, "", suites); $0 = "Suites: " codename }
            else if (field == "enabled:") { enabled = $2 }
            lines[++line_count] = $0
        }
        END { flush() }
    ' "$@"
}

# Prints the deb-src counterpart, in deb822 form, of every `deb` line for the
# release CODENAME in the given one-line-style (*.list) files.
one_line_to_deb_src() {
    local codename=$1
    shift
    awk -v codename="$codename" '
        $1 != "deb" { next }
        {
            options = ""
            field = 2
            if ($2 ~ /^\[/) {
                while (field <= NF && $field !~ /\]$/) { options = options " " $field; field++ }
                options = options " " $field
                field++
                gsub(/[\[\]]/, "", options)
            }
            if ($(field + 1) != codename) next
            components = ""
            for (i = field + 2; i <= NF; i++) components = components " " $i
            print "Types: deb-src"
            print "URIs: " $field
            print "Suites: " codename
            print "Components:" components
            count = split(options, pairs, /[ \t]+/)
            for (i = 1; i <= count; i++) {
                if (pairs[i] ~ /^signed-by=/) { sub(/^signed-by=/, "", pairs[i]); print "Signed-By: " pairs[i] }
            }
            print ""
        }
    ' "$@"
}

# Prints the version of the newest `kubernetes` source package in apt's
# package lists, or nothing when no deb-src entry provides it.
kubernetes_source_version() {
    { apt-cache showsrc kubernetes 2>/dev/null || true; } | awk '$1 == "Version:" { print $2 }' | sort -V | tail -n 1
}

# Makes the `kubernetes` source package of this Debian release available to
# apt-get source. When no configured deb-src entry provides it, this writes
# DEB_SRC_LIST with deb-src entries for the mirrors already configured for the
# release, and no other host.
configure_deb_src() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [[ "$codename" != bookworm ]]; then
        log "warning: this machine runs Debian '${codename:-unknown}', but the build is known to work on bookworm only"
    fi

    if can_run_as_root; then
        update_package_lists
    fi
    source_package_version=$(kubernetes_source_version)
    if [[ -n "$source_package_version" ]]; then
        return
    fi

    local sources=() lists=() file
    for file in /etc/apt/sources.list.d/*.sources; do
        if [[ -f "$file" && "$file" != "$DEB_SRC_LIST" ]]; then
            sources+=("$file")
        fi
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        if [[ -f "$file" ]]; then
            lists+=("$file")
        fi
    done

    local entries=""
    if [[ ${#sources[@]} -gt 0 ]]; then
        entries+=$(deb822_to_deb_src "$codename" "${sources[@]}")
    fi
    if [[ ${#lists[@]} -gt 0 ]]; then
        entries+=$'\n'$(one_line_to_deb_src "$codename" "${lists[@]}")
    fi
    if [[ -z "${entries//[[:space:]]/}" ]]; then
        fail "no apt source for the suite '$codename' found in /etc/apt/sources.list or /etc/apt/sources.list.d, so no deb-src entry can be added. Add a deb-src entry that provides the 'kubernetes' source package and run this script again."
    fi

    log "adding deb-src entries for the '$codename' mirrors in $DEB_SRC_LIST"
    printf '# Added by %s of Parley, which builds the test binaries of its\n# Kubernetes operator from the kubernetes source package.\n%s\n' \
        "scripts/$script_name" "$entries" | run_as_root tee "$DEB_SRC_LIST" >/dev/null
    package_lists_updated=false
    update_package_lists
    source_package_version=$(kubernetes_source_version)
    if [[ -z "$source_package_version" ]]; then
        fail "apt finds no 'kubernetes' source package even with the deb-src entries in $DEB_SRC_LIST. The package exists in Debian bookworm. Use a bookworm machine or set KUBEBUILDER_ASSETS."
    fi
}

# Installs the Debian packages that the build runs: Go and dpkg-dev (for
# dpkg-source, which apt-get source calls).
install_build_packages() {
    local missing=() package
    for package in golang-go dpkg-dev; do
        if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        update_package_lists
        log "installing ${missing[*]}"
        run_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends "${missing[@]}" >&2 ||
            fail "apt-get install ${missing[*]} failed. Install them by hand and run this script again."
    fi
    [[ -x "$DEBIAN_GO_BIN/go" ]] || fail "$DEBIAN_GO_BIN/go not found although golang-go is installed. Check the golang-go package."
}

# Downloads a binary package and unpacks it into DEST without installing it.
# The postinst script of etcd-server starts a system etcd service (through
# systemd or /etc/init.d/etcd), which the tests do not want.
unpack_debian_package() {
    local package=$1 dest=$2 download_dir
    download_dir=$(mktemp -d "$build_dir/download.XXXXXX")
    (cd "$download_dir" && apt_get download "$package" >&2) ||
        fail "apt-get download $package failed. Check that apt can reach the configured mirror."
    mkdir -p "$dest"
    dpkg-deb -x "$download_dir"/"$package"_*.deb "$dest" || fail "dpkg-deb could not unpack the $package package."
}

# Writes the kubernetes source tree into $build_dir/kubernetes and checks that
# it is Kubernetes 1.20.2.
fetch_kubernetes_source() {
    local download_dir=$build_dir/source
    mkdir -p "$download_dir"
    log "downloading the kubernetes source package $source_package_version"
    (cd "$download_dir" && apt_get source kubernetes >&2) ||
        fail "apt-get source kubernetes failed. Check the deb-src entries and that dpkg-dev is installed."

    local tree
    tree=$(find "$download_dir" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' -print -quit)
    [[ -n "$tree" ]] || fail "apt-get source kubernetes unpacked no kubernetes-* directory in $download_dir."

    local base_version_file=$tree/staging/src/k8s.io/component-base/version/base.go
    if ! grep -q 'k8s.io/kubernetes' "$tree/go.mod" 2>/dev/null; then
        fail "$tree does not look like a Kubernetes source tree: go.mod of k8s.io/kubernetes not found."
    fi
    local package_version
    package_version=$(cd "$tree" && dpkg-parsechangelog -S Version)
    if [[ ! "$package_version" =~ (^|really)${KUBERNETES_VERSION#v}(-|$) ]]; then
        fail "the kubernetes source package is version $package_version, but this script builds $KUBERNETES_VERSION. Update KUBERNETES_VERSION and check that the build steps still apply."
    fi
    [[ -f "$base_version_file" ]] || fail "$base_version_file not found in the kubernetes source tree."
    mv "$tree" "$build_dir/kubernetes"
}

# Replaces the vendored github.com/modern-go/reflect2 (1.0.1) with Debian's
# 1.0.2. Version 1.0.1 links to the Go runtime's internal reflect.mapiterinit
# with its signature from before Go 1.18, and 1.0.2 adds the Go 1.18 one
# (go_above_118.go). Built with 1.0.1 and Go 1.19.8, kube-apiserver crashed
# with SIGSEGV in reflect.mapiterinit at the first request that created a
# CustomResourceDefinition.
replace_reflect2() {
    local unpacked=$build_dir/reflect2-package
    unpack_debian_package "$DEBIAN_REFLECT2_PACKAGE" "$unpacked"
    local debian_copy=$unpacked/usr/share/gocode/src/github.com/modern-go/reflect2
    [[ -f "$debian_copy/reflect2.go" ]] || fail "$DEBIAN_REFLECT2_PACKAGE contains no $debian_copy/reflect2.go."

    local vendored=$build_dir/kubernetes/vendor/github.com/modern-go/reflect2
    [[ -d "$vendored" ]] || fail "vendored reflect2 not found at $vendored."
    rm -rf -- "$vendored"
    cp -R "$debian_copy" "$vendored"
    log "replaced the vendored reflect2 with $DEBIAN_REFLECT2_PACKAGE"
}

# Prints, comma separated, the Go import paths of the packages that carry a
# `// +k8s:openapi-gen=` tag. This selects the same packages as the
# gen_openapi rule in Makefile.generated_files of Kubernetes 1.20: all of the
# tree except vendor/, with staging/src/ named by its vendor/ path, and
# without code-generator and sample-apiserver, which have their own OpenAPI
# packages.
openapi_input_packages() {
    (
        cd "$build_dir/kubernetes"
        find . \( -path ./vendor -o -path './_*' -o -path './.*' -o -path ./debian \) -prune \
            -o -type f -name '*.go' -print0 |
            xargs -0 grep -lE '^// *\+k8s:openapi-gen=' |
            sed -e 's|/[^/]*$||' -e 's|^\./||' -e 's|^staging/src/|vendor/|' |
            grep -vE '^vendor/k8s\.io/(code-generator|sample-apiserver)(/|$)' |
            LC_ALL=C sort -u |
            sed 's|^|k8s.io/kubernetes/|' |
            paste -sd, -
    )
}

# Prints the -ldflags value that sets the version that `--version` and the
# /version endpoint report. Kubernetes' own build (hack/lib/version.sh) sets
# the same variables in both packages. gitCommit keeps the value that the
# release tarball stores in the source. -s -w leave out the symbol table and
# DWARF data, as Kubernetes' release builds do, and Go still prints stack
# traces without them.
version_ldflags() {
    local flags="-s -w" package key
    local build_date
    build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local major=${KUBERNETES_VERSION#v}
    major=${major%%.*}
    local minor=${KUBERNETES_VERSION#v*.}
    minor=${minor%%.*}
    for package in client-go/pkg/version component-base/version; do
        for key in gitVersion=$KUBERNETES_VERSION gitMajor=$major gitMinor=$minor gitTreeState=clean buildDate=$build_date; do
            flags+=" -X k8s.io/kubernetes/vendor/k8s.io/$package.$key"
        done
    done
    echo "$flags"
}

# Runs a command in a process group of its own and waits for it. Unlike a
# foreground command, this lets the INT and TERM traps run at once, and
# clean_up then stops the command with all of its child processes.
run_in_process_group() {
    setsid -w "$@" &
    child_pid=$!
    local status=0
    wait "$child_pid" || status=$?
    child_pid=""
    return "$status"
}

# Generates the OpenAPI definitions, which the source package lacks, and
# builds kube-apiserver and kube-controller-manager into $build_dir/out.
build_kubernetes() {
    local tree=$build_dir/kubernetes
    # Kubernetes 1.20 builds in GOPATH mode from k8s.io/kubernetes inside a
    # GOPATH, like debian/rules does with its .go symlink.
    mkdir -p "$tree/.go/src/k8s.io"
    ln -s ../../.. "$tree/.go/src/k8s.io/kubernetes"

    # GOENV=off and the unset GOFLAGS keep the user's Go settings out of the
    # build. GOCACHE outlives a failed build, so a retry is faster, and is
    # removed after a successful one. GOTMPDIR is inside the build directory
    # because go leaves its work directory behind when it is killed.
    mkdir -p "$build_dir/go-tmp"
    local go_env=(
        env -u GOFLAGS
        PATH="$DEBIAN_GO_BIN:$PATH"
        GOENV=off GOPATH="$tree/.go" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off
        GOCACHE="$go_cache_dir" GOTMPDIR="$build_dir/go-tmp"
    )

    cd "$tree/.go/src/k8s.io/kubernetes"
    log "building openapi-gen"
    run_in_process_group "${go_env[@]}" go build -o "$build_dir/tools/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen ||
        fail "go build of openapi-gen failed; the Go output above names the cause."

    local inputs
    inputs=$(openapi_input_packages)
    [[ -n "$inputs" ]] || fail "no package with a +k8s:openapi-gen= tag found in $tree."
    log "generating pkg/generated/openapi from $(tr ',' '\n' <<<"$inputs" | wc -l) packages"
    # A report file makes openapi-gen list API rule violations there instead
    # of failing. Kubernetes 1.20 accepts 617 of them, which
    # api/api-rules/violation_exceptions.list lists.
    run_in_process_group "${go_env[@]}" "$build_dir/tools/openapi-gen" \
        --input-dirs "$inputs" \
        --output-package k8s.io/kubernetes/pkg/generated/openapi \
        --output-file-base zz_generated.openapi \
        --go-header-file hack/boilerplate/boilerplate.generatego.txt \
        --report-filename "$build_dir/openapi-violations.report" >&2 ||
        fail "openapi-gen failed; its output above names the cause."
    [[ -s pkg/generated/openapi/zz_generated.openapi.go ]] ||
        fail "openapi-gen wrote no pkg/generated/openapi/zz_generated.openapi.go."

    log "building kube-apiserver and kube-controller-manager (3.5 to 7 minutes on 2 cores)"
    mkdir -p "$build_dir/out"
    run_in_process_group "${go_env[@]}" go build -ldflags "$(version_ldflags)" -o "$build_dir/out/" \
        ./cmd/kube-apiserver ./cmd/kube-controller-manager ||
        fail "go build of kube-apiserver and kube-controller-manager failed; the Go output above names the cause."
    cd "$build_dir"
}

add_etcd() {
    local unpacked=$build_dir/etcd-package
    unpack_debian_package etcd-server "$unpacked"
    [[ -x "$unpacked/usr/bin/etcd" ]] || fail "the etcd-server package contains no usr/bin/etcd."
    cp "$unpacked/usr/bin/etcd" "$build_dir/out/etcd"
}

# Runs each binary once so that a broken build never reaches the cache.
check_binaries() {
    local out=$build_dir/out binary version
    for binary in kube-apiserver kube-controller-manager; do
        version=$("$out/$binary" --version) || fail "$out/$binary --version failed."
        [[ "$version" == "Kubernetes $KUBERNETES_VERSION" ]] ||
            fail "$out/$binary --version printed '$version', expected 'Kubernetes $KUBERNETES_VERSION'."
    done
    "$out/etcd" --version >/dev/null || fail "$out/etcd --version failed."
}

# Writes the marker and renames the finished directory to CACHE_DIR. The
# rename is atomic, so other readers see either no cache or a complete one.
install_into_cache() {
    {
        echo "kubernetes $KUBERNETES_VERSION from the Debian source package $source_package_version"
        "$build_dir/out/etcd" --version | sed -n 1p
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/$script_name"
    } >"$build_dir/out/$COMPLETE_MARKER"
    if [[ -e "$cache_dir" ]]; then
        # An incomplete directory, for example one whose marker was deleted.
        mv -- "$cache_dir" "$build_dir/replaced-cache"
    fi
    mv -T -- "$build_dir/out" "$cache_dir"
}

build_assets() {
    local started=$SECONDS
    configure_deb_src
    install_build_packages
    fetch_kubernetes_source
    replace_reflect2
    build_kubernetes
    add_etcd
    check_binaries
    install_into_cache
    rm -rf -- "$go_cache_dir"
    log "built ${REQUIRED_BINARIES[*]} into $cache_dir in $((SECONDS - started)) s"
}

clean_up() {
    if [[ -n "${child_pid:-}" ]]; then
        log "stopping the running build step (process group $child_pid)"
        kill -TERM -- "-$child_pid" 2>/dev/null || true
        wait "$child_pid" 2>/dev/null || true
    fi
    if [[ -n "${build_dir:-}" && -d "$build_dir" ]]; then
        # rm cannot delete the contents of a read-only directory, and a source
        # tarball may contain one.
        chmod -R u+w -- "$build_dir" 2>/dev/null || true
        rm -rf -- "$build_dir"
    fi
}

# 1. An explicit KUBEBUILDER_ASSETS wins when it is complete.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if has_all_binaries "$KUBEBUILDER_ASSETS"; then
        printf '%s\n' "$KUBEBUILDER_ASSETS"
        exit 0
    fi
    log "warning: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of the executables ${REQUIRED_BINARIES[*]}, so the cache is used instead"
fi

# 2. A completed cache.
if [[ -n "${PARLEY_ENVTEST_CACHE:-}" ]]; then
    cache_root=$PARLEY_ENVTEST_CACHE
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    cache_root=$XDG_CACHE_HOME/parley/envtest
elif [[ -n "${HOME:-}" ]]; then
    cache_root=$HOME/.cache/parley/envtest
else
    fail "HOME, XDG_CACHE_HOME and PARLEY_ENVTEST_CACHE are all unset, so there is no place for the cache. Set PARLEY_ENVTEST_CACHE to a directory outside the checkout."
fi
[[ "$cache_root" == /* ]] || cache_root=$PWD/$cache_root
cache_dir=$cache_root/$KUBERNETES_VERSION

if is_complete_cache "$cache_dir"; then
    printf '%s\n' "$cache_dir"
    exit 0
fi

# 3. Build. The cache must not be inside the checkout, where `cargo` and `git`
# would see 2 GB of build files.
resolved_cache_root=$(realpath -m -- "$cache_root")
if [[ "$resolved_cache_root/" == "$repo_root/"* ]]; then
    fail "the cache directory $resolved_cache_root is inside the checkout $repo_root. Set PARLEY_ENVTEST_CACHE to a directory outside it."
fi
mkdir -p -- "$cache_root" || fail "cannot create the cache directory $cache_root. Set PARLEY_ENVTEST_CACHE to a writable directory."

# One build at a time per cache. A second run waits here and then finds the
# cache that the first one completed.
exec 9>"$cache_root/$KUBERNETES_VERSION.lock"
if ! flock -n 9; then
    log "another run is building $cache_dir; waiting for it to finish"
    flock 9
fi
if is_complete_cache "$cache_dir"; then
    printf '%s\n' "$cache_dir"
    exit 0
fi

# Build directories left by a killed run. The lock guarantees that no other
# run of this script uses them.
for stale in "$cache_root/.build-$KUBERNETES_VERSION".*; do
    if [[ -d "$stale" ]]; then
        log "removing $stale, left by an interrupted build"
        chmod -R u+w -- "$stale" 2>/dev/null || true
        rm -rf -- "$stale"
    fi
done

go_cache_dir=$cache_root/.go-build-cache-$KUBERNETES_VERSION
build_dir=$(mktemp -d "$cache_root/.build-$KUBERNETES_VERSION.XXXXXX")
trap clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "no complete cache at $cache_dir; building ${REQUIRED_BINARIES[*]} (log on stderr)"
build_assets >&2
printf '%s\n' "$cache_dir"
