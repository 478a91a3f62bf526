#!/usr/bin/env bash
# bench/webhook-load.sh: HTTP load benchmark of the secret-inject webhook (see bench/README.md).
#
# Builds the release binary, starts `secret-inject webhook` on free loopback ports with a
# generated development certificate, checks that one real AdmissionReview POST is answered
# 200 with a JSON patch, then drives POST /mutating-pods with wrk (HTTP/1.1 keep-alive over
# TLS) at several concurrencies and reports req/s, p50, p99 and the server's peak RSS
# against the targets. Results also go to bench/results/webhook-load.json (not committed).
#
# Fails (exit != 0) on any setup error, server crash, socket error or non-200 response.
# A missed performance target is reported as MISS but does not fail the script.
#
# Environment (all optional):
#   DURATION=10        seconds per wrk run
#   CONCURRENCY="1 16 64"  connection counts, one wrk run each
#   THREADS=1          wrk threads (one event-loop thread drives 64 connections; every core
#                      wrk does not take is one the server can use on this 2-core machine)
#   WARMUP=2           seconds of unreported warm-up load at 16 connections (0 to skip)
#   BODY=tests/golden/seed-webserver/request.json   the AdmissionReview to POST
#   RESULTS=bench/results/webhook-load.json         where the JSON results go
#   SKIP_BUILD=1       use the existing target/x86_64-unknown-linux-gnu/release/secret-inject (no cargo build)
#   KEEP_TMP=1         keep the temporary directory (server log, wrk outputs)
#
# Note: the server and wrk share the machine's cores (2 on the project's machines), so
# the numbers are a lower bound of what the server does on cores of its own.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # say, die, apt_install, cleanup helpers, git_commit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
THREADS="${THREADS:-1}"
WARMUP="${WARMUP:-2}"
BODY="${BODY:-tests/golden/seed-webserver/request.json}"
RESULTS="${RESULTS:-bench/results/webhook-load.json}"
LUA="$REPO/bench/post-review.lua"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/secret-inject"  # .cargo/config.toml sets the target

# Targets (reported, not gated).
TARGET_RPS_C64=20000     # requests/s at 64 connections, at least
TARGET_P99_C16_US=2000   # p99 latency at 16 connections, at most (microseconds)
TARGET_RSS_KB=20480      # peak RSS (VmHWM), at most: 20 MiB

for var in DURATION THREADS WARMUP; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number of seconds/threads, got '${!var}'"
done
(( DURATION > 0 )) || die "DURATION must be > 0"
(( THREADS > 0 )) || die "THREADS must be > 0"
for c in $CONCURRENCY; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY must list positive integers, got '$c'"
done
[[ -f "$BODY" ]] || die "request body $BODY not found"
[[ -f "$LUA" ]] || die "wrk script $LUA not found"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/webhook-load.XXXXXX")"
SERVER_PID=""
cleanup() {
  local rc=$?
  stop_process "$SERVER_PID"
  show_log_tail "$rc" server "$TMP/server.log" 20
  remove_tmp "$rc" "$TMP"
  exit "$rc"
}
on_exit cleanup

# --- 1. tools -------------------------------------------------------------------------------
if ! command -v python3 >/dev/null; then
  say "python3 not found (needed to pick ports and check the first response): installing it"
  apt_install python3
fi
if ! command -v wrk >/dev/null; then
  say "wrk not found: installing Debian's wrk package"
  apt_install wrk
fi
WRK_VERSION="$(wrk --version 2>&1 | head -n 1 || true)"
say "load generator: $(command -v wrk) ($WRK_VERSION)"
command -v cargo >/dev/null || [[ -n "${SKIP_BUILD:-}" ]] || die "cargo not found on PATH"

# --- 2. build -------------------------------------------------------------------------------
BUILD_SECONDS=null
if [[ -n "${SKIP_BUILD:-}" ]]; then
  say "SKIP_BUILD set: using the existing $BIN"
else
  say "building: cargo build --release --locked"
  build_start=$(date +%s.%N)
  cargo build --release --locked
  BUILD_SECONDS=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
    "$build_start" "$(date +%s.%N)")
  say "build took ${BUILD_SECONDS} s (a no-op when target/ is already up to date)"
fi
[[ -x "$BIN" ]] || die "$BIN not found or not executable"

# --- 3. start the webhook -------------------------------------------------------------------
read -r PORT ADMIN_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)
CA="$TMP/ca.pem"
SERVER_CMD=("$BIN" --log-format json --log-level warn webhook
  --bind-address 127.0.0.1 --port "$PORT" --admin-port "$ADMIN_PORT" --dev-tls --write-ca "$CA")
say "starting: ${SERVER_CMD[*]}"
"${SERVER_CMD[@]}" 2>"$TMP/server.log" >"$TMP/server.stdout" &
SERVER_PID=$!

ready=false
for _ in $(seq 300); do  # up to 30 s
  kill -0 "$SERVER_PID" 2>/dev/null || die "the webhook exited during start-up"
  if python3 - "$ADMIN_PORT" <<'EOF' 2>/dev/null
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1)
c.request("GET", "/readyz")
sys.exit(0 if c.getresponse().status == 200 else 1)
EOF
  then ready=true; break; fi
  sleep 0.1
done
$ready || die "the webhook did not become ready on http://127.0.0.1:$ADMIN_PORT/readyz within 30 s"
[[ -s "$CA" ]] || die "the webhook is ready but wrote no CA to $CA"
IDLE_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
say "webhook ready: pid $SERVER_PID, https://127.0.0.1:$PORT/mutating-pods, admin :$ADMIN_PORT, idle RSS ${IDLE_RSS_KB} kB"

# --- 4. one checked request -----------------------------------------------------------------
URL="https://127.0.0.1:$PORT/mutating-pods"
python3 - "$PORT" "$CA" "$BODY" <<'EOF' || die "the first AdmissionReview POST did not get a valid 200 JSON patch response"
import http.client, json, ssl, sys
port, ca, body_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
body = open(body_path, "rb").read()
ctx = ssl.create_default_context(cafile=ca)  # verifies the dev certificate (SAN 127.0.0.1)
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
conn.request("POST", "/mutating-pods", body=body, headers={"Content-Type": "application/json"})
resp = conn.getresponse()
data = resp.read()
text = data.decode("utf-8", "replace")
if resp.status != 200:
    sys.exit(f"check: status {resp.status}, body: {text[:500]}")
if '"patch":"' not in text:
    sys.exit(f"check: 200 but no \"patch\":\" in the body: {text[:500]}")
review = json.loads(data)
r = review.get("response") or {}
want_uid = json.loads(body)["request"]["uid"]
if r.get("uid") != want_uid or r.get("allowed") is not True or r.get("patchType") != "JSONPatch":
    sys.exit(f"check: unexpected response fields: {json.dumps(r)[:500]}")
print(f"==> check: POST /mutating-pods -> 200, {len(data)} bytes, allowed, "
      f"JSONPatch of {len(r['patch'])} base64 chars, request body {len(body)} bytes")
EOF

# --- 5. load ------------------------------------------------------------------------------
export BENCH_BODY_FILE="$REPO/$BODY"
[[ "$BODY" = /* ]] && BENCH_BODY_FILE="$BODY"

# cpu_snapshot: "SERVER_TICKS CHILDREN_TICKS MACHINE_BUSY_TICKS MACHINE_TOTAL_TICKS" (all CPUs).
cpu_snapshot() {
  local server children stat
  server=$(sed 's/.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}')   # utime+stime
  children=$(sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}')         # cutime+cstime
  stat=$(awk '/^cpu / {busy = $2+$3+$4+$7+$8+$9; print busy, busy + $5 + $6}' /proc/stat)
  echo "$server $children $stat"
}

# run_wrk NAME CONNECTIONS SECONDS: run wrk, keep its output in $TMP/NAME.txt, fail on errors.
run_wrk() {
  local name=$1 conns=$2 secs=$3
  local threads=$(( conns < THREADS ? conns : THREADS ))
  local out="$TMP/$name.txt"
  local cmd=(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$LUA" "$URL")
  say "$name: ${cmd[*]}"
  local before after
  before="$(cpu_snapshot)"
  if ! "${cmd[@]}" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed ($name)"
  fi
  after="$(cpu_snapshot)"
  # CPU used during the run, in clock ticks: the server, wrk (this shell's waited-for
  # children), and the whole machine; whatever is left is other processes' load.
  local s0 w0 b0 t0 s1 w1 b1 t1
  read -r s0 w0 b0 t0 <<<"$before"
  read -r s1 w1 b1 t1 <<<"$after"
  echo "CPUSTAT server=$((s1 - s0)) wrk=$((w1 - w0)) busy=$((b1 - b0)) total=$((t1 - t0))" >>"$out"
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$out" >&2; die "the webhook died during $name"; }
  local line
  line=$(grep '^BENCHRESULT ' "$out" || true)
  [[ -n "$line" ]] || { cat "$out" >&2; die "no BENCHRESULT line in wrk's output ($name)"; }
  local bad=0 key value
  for kv in ${line#BENCHRESULT }; do
    key=${kv%%=*}; value=${kv#*=}
    case $key in
      non200|err_connect|err_read|err_write|err_status|err_timeout)
        if [[ "$value" != 0 ]]; then bad=1; fi ;;
      requests)
        if [[ "$value" == 0 ]]; then bad=1; fi ;;
    esac
  done
  if (( bad )); then
    cat "$out" >&2
    die "$name had errors, non-200 responses or no requests: ${line#BENCHRESULT }"
  fi
  sed -e '/^BENCHRESULT /d' -e '/^CPUSTAT /d' -e 's/^/    /' "$out"
}

if (( WARMUP > 0 )); then
  run_wrk warmup 16 "$WARMUP" >/dev/null
  say "warm-up: ${WARMUP} s at 16 connections, not reported"
fi
for c in $CONCURRENCY; do
  run_wrk "c$c" "$c" "$DURATION"
done

# --- 6. memory --------------------------------------------------------------------------
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
SERVER_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")
METRICS_REVIEWS=$(python3 - "$ADMIN_PORT" <<'EOF' || echo null
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/metrics")
for line in c.getresponse().read().decode().splitlines():
    if line.startswith('secret_inject_admission_reviews_total{outcome="mutated"}'):
        print(int(float(line.split()[-1])))
        break
else:
    print("null")
EOF
)
LOG_LINES=$(wc -l <"$TMP/server.log")
if (( LOG_LINES > 0 )); then
  say "the server logged $LOG_LINES line(s) at warn level or above during the run (first 5):"
  head -n 5 "$TMP/server.log" | sed 's/^/    /'
fi

# --- 7. report ----------------------------------------------------------------------------
mkdir -p "$(dirname "$RESULTS")"
GIT_COMMIT="$(git_commit)"
export TMP CONCURRENCY DURATION THREADS WARMUP BODY RESULTS WRK_VERSION BUILD_SECONDS \
  IDLE_RSS_KB HWM_KB RSS_KB SERVER_THREADS METRICS_REVIEWS LOG_LINES GIT_COMMIT \
  TARGET_RPS_C64 TARGET_P99_C16_US TARGET_RSS_KB
python3 - <<'EOF'
import datetime, json, os
env = os.environ
ncpu = os.cpu_count()
runs = []
for c in env["CONCURRENCY"].split():
    line = next(l for l in open(f'{env["TMP"]}/c{c}.txt') if l.startswith("BENCHRESULT "))
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    cpuline = next(l for l in open(f'{env["TMP"]}/c{c}.txt') if l.startswith("CPUSTAT "))
    cpu = {k: int(v) for k, v in (p.split("=", 1) for p in cpuline.split()[1:])}
    # Cores used on average = ticks / (wall-clock ticks of one CPU) = ticks * ncpu / total.
    cores = lambda ticks: round(ticks * ncpu / cpu["total"], 2) if cpu["total"] else 0.0
    runs.append({
        "connections": int(c),
        "threads": min(int(c), int(env["THREADS"])),
        "requests": int(kv["requests"]),
        "duration_s": round(int(kv["duration_us"]) / 1e6, 3),
        "requests_per_s": round(float(kv["rps"]), 1),
        "latency_us": {k: int(kv[f"{k}_us"]) for k in ("p50", "p90", "p99", "max")}
                      | {"mean": float(kv["mean_us"])},
        "non_200": int(kv["non200"]),
        "socket_errors": sum(int(kv[k]) for k in
                             ("err_connect", "err_read", "err_write", "err_timeout")),
        "cpu_cores": {"server": cores(cpu["server"]), "wrk": cores(cpu["wrk"]),
                      "other": max(0.0, cores(cpu["busy"] - cpu["server"] - cpu["wrk"])),
                      "machine": ncpu},
    })
by_c = {r["connections"]: r for r in runs}
hwm, rss = int(env["HWM_KB"]), int(env["RSS_KB"])

def ms(us):
    return f"{us / 1000:.2f} ms"

def check(name, value, target, ok, shown, shown_target, miss_by):
    return {"name": name, "value": value, "target": target,
            "result": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            "shown": shown, "shown_target": shown_target, "miss_by": miss_by}

checks = []
t = int(env["TARGET_RPS_C64"])
if 64 in by_c:
    v = by_c[64]["requests_per_s"]
    checks.append(check("req/s at c=64", v, t, v >= t, f"{v:,.0f} req/s", f">= {t:,} req/s",
                        None if v >= t else f"{(t - v) / t:.0%} short ({t - v:,.0f} req/s)"))
else:
    checks.append(check("req/s at c=64", None, t, None, "not run", f">= {t:,} req/s", None))
t = int(env["TARGET_P99_C16_US"])
if 16 in by_c:
    v = by_c[16]["latency_us"]["p99"]
    checks.append(check("p99 at c=16", v, t, v <= t, ms(v), f"<= {ms(t)}",
                        None if v <= t else f"{ms(v - t)} over ({v / t:.1f}x)"))
else:
    checks.append(check("p99 at c=16", None, t, None, "not run", f"<= {ms(t)}", None))
t = int(env["TARGET_RSS_KB"])
checks.append(check("peak RSS (VmHWM)", hwm, t, hwm <= t, f"{hwm / 1024:.1f} MiB",
                    f"<= {t / 1024:.0f} MiB",
                    None if hwm <= t else f"{(hwm - t) / 1024:.1f} MiB over"))

print()
print(f"secret-inject webhook load ({env['DURATION']} s per run, wrk threads <= {env['THREADS']}, "
      f"HTTP/1.1 keep-alive over TLS, POST {os.path.basename(os.path.dirname(env['BODY']))}"
      f"/{os.path.basename(env['BODY'])})")
print(f"{'concurrency':>11} | {'req/s':>9} | {'p50':>9} | {'p99':>9} | {'requests':>9} | "
      f"CPU cores used: server / wrk / other")
print(f"{'-' * 11}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 9}-+-{'-' * 36}")
for r in runs:
    u = r["cpu_cores"]
    print(f"{r['connections']:>11} | {r['requests_per_s']:>9,.0f} | {ms(r['latency_us']['p50']):>9} | "
          f"{ms(r['latency_us']['p99']):>9} | {r['requests']:>9,} | "
          f"{u['server']:.2f} / {u['wrk']:.2f} / {u['other']:.2f} of {ncpu}")
print(f"server RSS: peak (VmHWM) {hwm / 1024:.1f} MiB, now (VmRSS) {rss / 1024:.1f} MiB, "
      f"idle before load {int(env['IDLE_RSS_KB']) / 1024:.1f} MiB; {env['SERVER_THREADS']} threads")
total = sum(r["requests"] for r in runs)
mr = env["METRICS_REVIEWS"]
print(f"all {total:,} measured responses were 200 (server's mutated-reviews counter: {mr}, "
      f"incl. warm-up and check)")
print()
print("targets:")
for c in checks:
    extra = f"  ({c['miss_by']})" if c["miss_by"] else ""
    print(f"  {c['result']:<4}  {c['name']:<17} {c['shown']:>14}   target {c['shown_target']}{extra}")
print(f"note: wrk and the server share this machine's {ncpu} cores; the server would do better "
      f"on cores of its own.")
busiest = max((r["cpu_cores"]["other"] for r in runs), default=0.0)
if busiest > 0.25:
    print(f"WARNING: other processes used up to {busiest:.2f} of {ncpu} cores during the runs "
          f"(a build or test?): these numbers understate the server; rerun on an idle machine.")

result = {
    "benchmark": "bench/webhook-load.sh",
    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": env["GIT_COMMIT"],
    "cpus": ncpu,
    "load_generator": env["WRK_VERSION"],
    "build_seconds": None if env["BUILD_SECONDS"] == "null" else float(env["BUILD_SECONDS"]),
    "duration_s_per_run": int(env["DURATION"]),
    "warmup_s": int(env["WARMUP"]),
    "body": env["BODY"],
    "runs": runs,
    "max_other_cpu_cores": busiest,
    "server": {"peak_rss_kb": hwm, "rss_kb": rss, "idle_rss_kb": int(env["IDLE_RSS_KB"]),
               "threads": int(env["SERVER_THREADS"]),
               "mutated_reviews_metric": None if mr == "null" else int(mr),
               "log_lines_warn_or_above": int(env["LOG_LINES"])},
    "targets": [{k: c[k] for k in ("name", "value", "target", "result", "miss_by")} for c in checks],
}
with open(env["RESULTS"], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"results written to {env['RESULTS']}")
EOF
