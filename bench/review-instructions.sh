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
count() {  # count FILE REPEATS [--floor] -> instructions
    valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "$DRIVER" "$@" >/dev/null 2>"$TMP/err" \
        || { cat "$TMP/err" >&2; die "valgrind failed"; }
    sed -n 's/^summary: //p' "$TMP/out"
}
# The floor column: what bench/floor_server.rs does with the same review (parse it as a
# serde_json::Value, answer allowed with its uid), the JSON work no webhook can avoid.
printf '%-24s %14s %14s %8s\n' case instructions/review floor ratio
for case in "${CASES[@]}"; do
    file=tests/golden/$case/request.json
    [[ -f "$file" ]] || die "no golden case $case"
    one=$(count "$file" 1)
    many=$(count "$file" $((N + 1)))
    floor_one=$(count "$file" 1 --floor)
    floor_many=$(count "$file" $((N + 1)) --floor)
    ours=$(( (many - one) / N ))
    floor=$(( (floor_many - floor_one) / N ))
    printf '%-24s %14d %14d %7.2fx\n' "$case" "$ours" "$floor" "$(python3 -c "print($ours / $floor)")"
done
