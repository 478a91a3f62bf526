#!/usr/bin/env bash
# bench/review-instructions.sh: instructions per AdmissionReview, counted by valgrind's
# callgrind for the golden pods: a stable figure, unlike requests per second (see bench/README.md).
#
# Usage: bench/review-instructions.sh [CASE...]   (default: the golden cases below)
# Each case is reviewed 1 and 1+N times; (I(1+N) - I(1)) / N removes start-up and the first
# review's one-time costs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
command -v valgrind >/dev/null || apt_install valgrind
N=${N:-200}
CASES=("$@")
(( ${#CASES[@]} )) || CASES=(seed-webserver irsa-fsgroup istio-native-sidecar not-annotated denied-bad-arn many-secrets-formats-env)
say "building the driver (release profile)"
cargo build --release --locked --example review_driver -q
DRIVER=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DRIVER=$(find "$DRIVER" -path '*/release/examples/review_driver' -type f | head -1)
[[ -x "$DRIVER" ]] || die "review_driver not built"
TMP=$(mktemp -d); on_exit "rm -rf $TMP"
count() {  # count FILE REPEATS -> instructions
    valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$DRIVER" "$1" "$2" >/dev/null 2>"$TMP/err" \
        || { cat "$TMP/err" >&2; die "valgrind failed"; }
    sed -n 's/^summary: //p' "$TMP/out"
}
printf '%-24s %14s\n' case instructions/review
for case in "${CASES[@]}"; do
    file=tests/golden/$case/request.json
    [[ -f "$file" ]] || die "no golden case $case"
    one=$(count "$file" 1)
    many=$(count "$file" $((N + 1)))
    printf '%-24s %14d\n' "$case" $(( (many - one) / N ))
done
