#!/usr/bin/env bash
# bench/node-pod-start.sh: what an init container costs a pod's start on the real node
# (see bench/README.md). Runs `cargo bench --bench node_pod_start` (benches/node_pod_start.rs):
# kubectl create -> Running over PODS pods for each of
#   a  no init container,
#   b  a no-op init container (busybox `true`): the floor of any init container,
#   c  ours: annotated, injected by the chart's webhook, the agent fetching one secret from moto
#      with the kubelet-projected IRSA token,
# one pod at a time, interleaved; prints median and p90 per variant, the overheads over (a) and
# ours/no-op against the target (<= 1.2), and writes bench/results/node-pod-start.json.
#
# Needs root (the node makes a bridge, runs containerd and the kubelet) and the test tools
# (`scripts/test` builds the control plane and the node into .tools/); the node waits for
# another test run's node (one per machine). The release build (lto) takes minutes when the
# binary is not up to date: the image the node pulls holds that release binary.
#
# Environment (all optional):
#   PODS=20      measured pods per variant
#   WARMUP=1     unreported pods per variant first (first pulls, page cache)
#   RESULTS=bench/results/node-pod-start.json   where the JSON goes
#   SKIP_SETUP=1 do not run `scripts/test --setup-only` (tools already built; or a worktree that
#                shares another checkout's .tools, where an older script would rebuild them)
#
# Exit status: 0 when every pod ran and was checked, whatever the numbers; a missed target is
# reported as MISS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # say, die

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PODS="${PODS:-20}"
WARMUP="${WARMUP:-1}"
RESULTS="${RESULTS:-$REPO/bench/results/node-pod-start.json}"
for var in PODS WARMUP; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
(( PODS >= 1 )) || die "PODS must be >= 1"
(( $(id -u) == 0 )) || die "run as root: the node makes a bridge and runs containerd and the kubelet"
command -v cargo >/dev/null || die "cargo not found on PATH"

if [[ -n "${SKIP_SETUP:-}" ]]; then
  say "SKIP_SETUP set: using the tools in .tools/ and .venv/ as they are"
else
  say "preparing the test tools: scripts/test --setup-only (.venv, helm, kubectl, the control plane, the node)"
  # shellcheck disable=SC2065  # scripts/test is the project's script, not test(1)
  scripts/test --setup-only >/dev/null || die "scripts/test --setup-only failed"
fi
export PATH="$REPO/.tools/bin:$REPO/.venv/bin:$PATH" AWS_EC2_METADATA_DISABLED=true
export PODS WARMUP RESULTS
say "cargo bench --locked --bench node_pod_start (PODS=$PODS, WARMUP=$WARMUP)"
cargo bench --locked --bench node_pod_start
