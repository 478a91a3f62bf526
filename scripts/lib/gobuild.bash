# scripts/lib/gobuild.bash: the build steps that scripts/build-controlplane and scripts/build-node
# share. Sourced, never run. Each of those scripts names its Go module (a folder whose go.mod
# lists the binaries as `tool`s), reads the pinned versions, builds with these functions and checks
# each binary's --version:
#
#   gobuild_init NAME MODULE DEST        check go, go.mod, go.sum; make DEST absolute
#   gobuild_version MODULE_PATH          print the version go.mod pins (go list -m)
#   gobuild_key  PREFIX [FILE...]        KEY=PREFIX-<12 hex of sha256 of go.mod, go.sum, the
#                                        calling script, this file, the module's .go files
#                                        (path and contents), FILEs and `go env GOVERSION`>
#   gobuild_begin LABEL                  lock DEST; exit 0 when DEST/KEY is complete; else make
#                                        DEST/.building-KEY/bin ($TMP) and download the modules
#   gobuild BIN PACKAGE [GO FLAGS...]    go build -trimpath ... -o $TMP/bin/BIN, timed
#   gobuild_finish PRUNE_GLOB            mark complete, move to DEST/KEY, point DEST/current at
#                                        it, remove older builds named PRUNE_GLOB
#
# Builds are static (CGO_ENABLED=0) and never rewrite go.mod or go.sum (GOFLAGS=-mod=readonly).
# shellcheck shell=bash

GOBUILD_LIB=${BASH_SOURCE[0]}

die() { echo "$GOBUILD_NAME: ERROR: $*" >&2; exit 1; }

gobuild_init() {  # gobuild_init NAME MODULE DEST
    GOBUILD_NAME=$1 MODULE=$2 DEST=$3
    mkdir -p "$DEST" || die "cannot create $DEST"
    DEST=$(cd "$DEST" && pwd)
    command -v go >/dev/null \
        || die "go not found on PATH (these binaries are built from Go modules: install Go >= 1.26, https://go.dev/dl/)"
    [[ -f "$MODULE/go.mod" && -f "$MODULE/go.sum" ]] || die "$MODULE/go.mod or go.sum is missing"
    GO_VERSION=$(go env GOVERSION)
    export CGO_ENABLED=0 GOFLAGS=-mod=readonly
}

gobuild_version() {  # gobuild_version MODULE_PATH: the version go.mod pins
    local version
    if ! version=$(cd "$MODULE" && go list -m -f '{{.Version}}' "$1") || [[ -z "$version" ]]; then
        die "cannot read $1's version from $MODULE/go.mod"
    fi
    echo "$version"
}

gobuild_key() {  # gobuild_key PREFIX [FILE...]
    local prefix=$1 file hash
    shift
    local sources=()
    while IFS= read -r file; do sources+=("$file"); done \
        < <(cd "$MODULE" && find . -name '*.go' -type f | LC_ALL=C sort)
    hash=$({
        cat "$MODULE/go.mod" "$MODULE/go.sum" "$0" "$GOBUILD_LIB" "$@"
        for file in "${sources[@]}"; do echo "$file"; cat "$MODULE/$file"; done
        echo "$GO_VERSION"
    } | sha256sum | cut -c1-12)
    KEY="$prefix-$hash"
    OUT="$DEST/$KEY"
}

gobuild_begin() {  # gobuild_begin LABEL: e.g. "control plane"
    GOBUILD_LABEL=$1
    # One build at a time per DEST (scripts/test may run twice at once); the second waits, then
    # finds the first one's build.
    if command -v flock >/dev/null; then
        exec 9>"$DEST/.lock"
        flock 9
    fi
    if [[ -f "$OUT/.complete" ]]; then
        ln -sfn "$KEY" "$DEST/current"
        echo "$GOBUILD_LABEL up to date ($KEY)"
        exit 0
    fi
    echo "==> building the $GOBUILD_LABEL $KEY into $OUT (once per key; a cold build takes minutes)"
    TMP="$DEST/.building-$KEY"
    rm -rf "$TMP"
    mkdir -p "$TMP/bin"
    GOBUILD_STARTED=$SECONDS
    (cd "$MODULE" && go mod download) \
        || die "go mod download failed: is the Go module proxy reachable (go env GOPROXY: $(go env GOPROXY))?"
    echo "    modules: $((SECONDS - GOBUILD_STARTED)) s"
}

gobuild() {  # gobuild BIN PACKAGE [GO BUILD FLAGS...]
    local name=$1 pkg=$2 started=$SECONDS
    shift 2
    (cd "$MODULE" && go build -trimpath "$@" -o "$TMP/bin/$name" "$pkg") \
        || die "go build of $pkg failed (see above)"
    echo "    $name: $((SECONDS - started)) s, $(du -h "$TMP/bin/$name" | cut -f1)"
}

gobuild_finish() {  # gobuild_finish PRUNE_GLOB: the shape of this script's own key-named folders
    local glob=$1
    touch "$TMP/.complete"
    rm -rf "$OUT"
    mv "$TMP" "$OUT"
    ln -sfn "$KEY" "$DEST/current"
    # Older builds are not needed any more (only this script's own key-named folders are removed).
    find "$DEST" -mindepth 1 -maxdepth 1 -type d \( -name "$glob" -o -name ".building-$glob" \) \
        ! -name "$KEY" -exec rm -rf {} +
    echo "$GOBUILD_LABEL built in $((SECONDS - GOBUILD_STARTED)) s ($KEY, $(du -sh "$OUT" | cut -f1))"
}
