#!/usr/bin/env bash
# bench/policy-admission.sh: what admission costs a pod creation in each mode (issue 23; see
# bench/README.md). Runs `cargo bench --bench policy_admission` (benches/policy_admission.rs):
# PODS server-side dry-run creations (dryRun=All: admission in full, nothing stored) on the test
# control plane for each of
#   baseline  an unannotated pod in a namespace no injector selects,
#   webhook   an annotated pod, injected by the chart's webhook (our binary over TLS),
#   policy    an annotated pod, injected by the MutatingAdmissionPolicy (in process),
# interleaved; prints median, p90 and p99 per variant and writes bench/results/policy-admission.json.
#
# Needs root (the control plane routes its Service range to lo) and the test tools
# (`scripts/test` builds the control plane into .tools/).
#
# Environment (all optional):
#   PODS=1000    measured pods per variant
#   WARMUP=20    unreported pods per variant first
#   RESULTS=bench/results/policy-admission.json   where the JSON goes
#   SKIP_SETUP=1 do not run `scripts/test --setup-only` (tools already built)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # say, die

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PODS="${PODS:-1000}"
WARMUP="${WARMUP:-20}"
RESULTS="${RESULTS:-$REPO/bench/results/policy-admission.json}"
for var in PODS WARMUP; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
(( PODS >= 1 )) || die "PODS must be >= 1"
(( $(id -u) == 0 )) || die "run as root: the control plane routes its Service range to lo"
command -v cargo >/dev/null || die "cargo not found on PATH"

if [[ -n "${SKIP_SETUP:-}" ]]; then
  say "SKIP_SETUP set: using the tools in .tools/ and .venv/ as they are"
else
  say "preparing the test tools: scripts/test --setup-only (.venv, helm, kubectl, the control plane)"
  # shellcheck disable=SC2065  # scripts/test is the project's script, not test(1)
  scripts/test --setup-only >/dev/null || die "scripts/test --setup-only failed"
fi
export PATH="$REPO/.tools/bin:$REPO/.venv/bin:$PATH" AWS_EC2_METADATA_DISABLED=true
export PODS WARMUP RESULTS
say "cargo bench --locked --bench policy_admission (PODS=$PODS, WARMUP=$WARMUP)"
cargo bench --locked --bench policy_admission
