#!/usr/bin/env bash
# bench/webhook-load.sh: HTTP load benchmark of the secret-inject webhook against a floor
# server (see bench/README.md).
#
# Builds the release binary and bench/floor_server.rs (rustls + hyper + serde_json: parse the
# review, answer allowed with its uid), starts both on free loopback ports, checks one real
# AdmissionReview POST to each (the webhook must answer 200 with a JSON patch), then drives
# POST /mutating-pods with wrk (HTTP/1.1 keep-alive over TLS) at several concurrencies, the
# floor and the webhook alternately, ROUNDS times, and reports req/s, p50, p99, each server's
# peak RSS, and the webhook/floor ratios against the targets. Results also go to
# bench/results/webhook-load.json (not committed).
#
# Fails (exit != 0) on any setup error, server crash, socket error or non-200 response.
# A missed performance target is reported as MISS but does not fail the script.
#
# Environment (all optional):
#   DURATION=5         seconds per wrk run
#   ROUNDS=3           runs per server and concurrency, floor and webhook alternating
#   LOG_LEVEL=info     the webhook's --log-level (info, its default, logs one line per review)
#   CONCURRENCY="1 16 64"  connection counts, one wrk run each
#   THREADS=1          wrk threads (one event-loop thread drives 64 connections; every core
#                      wrk does not take is one the server can use on this 2-core machine)
#   WARMUP=2           seconds of unreported warm-up load at 16 connections (0 to skip)
#   BODY=tests/golden/seed-webserver/request.json   the AdmissionReview to POST
#   RESULTS=bench/results/webhook-load.json         where the JSON results go
#   SKIP_BUILD=1       use the existing release secret-inject and floor_server (no cargo build)
#   KEEP_TMP=1         keep the temporary directory (server log, wrk outputs)
#
# Note: the server and wrk share the machine's cores (2 on the project's machines), so
# the numbers are a lower bound of what the server does on cores of its own.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # say, die, apt_install, cleanup helpers, git_commit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
LOG_LEVEL="${LOG_LEVEL:-info}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
THREADS="${THREADS:-1}"
WARMUP="${WARMUP:-2}"
BODY="${BODY:-tests/golden/seed-webserver/request.json}"
RESULTS="${RESULTS:-bench/results/webhook-load.json}"
LUA="$REPO/bench/post-review.lua"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/secret-inject"  # .cargo/config.toml sets the target
FLOOR_BIN="$REPO/target/x86_64-unknown-linux-gnu/release/examples/floor_server"

# Targets (reported, not gated), against the floor measured in the same run.
TARGET_RPS_RATIO_C64=0.8   # webhook req/s / floor req/s at 64 connections, at least
TARGET_P99_RATIO_C16=1.5   # webhook p99 / floor p99 at 16 connections, at most
TARGET_RSS_KB=20480        # the webhook's peak RSS (VmHWM), at most: 20 MiB

for var in DURATION ROUNDS THREADS WARMUP; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number of seconds/threads, got '${!var}'"
done
(( DURATION > 0 )) || die "DURATION must be > 0"
(( THREADS > 0 )) || die "THREADS must be > 0"
(( ROUNDS > 0 )) || die "ROUNDS must be > 0"
for c in $CONCURRENCY; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY must list positive integers, got '$c'"
done
[[ -f "$BODY" ]] || die "request body $BODY not found"
[[ -f "$LUA" ]] || die "wrk script $LUA not found"

# On tmpfs when there is one: the webhook's log (one line per review, ~300 bytes) must not
# wait on a disk's journal, as it does not in a pod (the container runtime reads a pipe).
TMP_PARENT="${TMPDIR:-/tmp}"
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]]; then TMP_PARENT=/dev/shm; fi
TMP="$(mktemp -d "$TMP_PARENT/webhook-load.XXXXXX")"
SERVER_PID=""
FLOOR_PID=""
cleanup() {
  local rc=$?
  stop_process "$SERVER_PID"
  stop_process "$FLOOR_PID"
  show_log_tail "$rc" webhook "$TMP/server.log" 20
  show_log_tail "$rc" floor "$TMP/floor.log" 20
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
  say "building: cargo build --release --locked --bin secret-inject --example floor_server"
  build_start=$(date +%s.%N)
  cargo build --release --locked --bin secret-inject --example floor_server
  BUILD_SECONDS=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
    "$build_start" "$(date +%s.%N)")
  say "build took ${BUILD_SECONDS} s (a no-op when target/ is already up to date)"
fi
[[ -x "$BIN" ]] || die "$BIN not found or not executable"
[[ -x "$FLOOR_BIN" ]] || die "$FLOOR_BIN not found or not executable"

# --- 3. start the webhook and the floor ------------------------------------------------------
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
SERVER_CMD=("$BIN" --log-format json --log-level "$LOG_LEVEL" webhook
  --bind-address 127.0.0.1 --port "$PORT" --admin-port "$ADMIN_PORT" --dev-tls --write-ca "$CA")
say "starting: ${SERVER_CMD[*]}"
# The log goes to a file on the same file system as the results: one JSON line per review at
# info, as a container runtime would collect it.
"${SERVER_CMD[@]}" 2>"$TMP/server.log" >"$TMP/server.stdout" &
SERVER_PID=$!

FLOOR_CA="$TMP/floor-ca.pem"
say "starting: $FLOOR_BIN 0 $FLOOR_CA"
"$FLOOR_BIN" 0 "$FLOOR_CA" >"$TMP/floor.stdout" 2>"$TMP/floor.log" &
FLOOR_PID=$!

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
FLOOR_PORT=""
for _ in $(seq 100); do  # up to 10 s
  kill -0 "$FLOOR_PID" 2>/dev/null || die "the floor server exited during start-up"
  FLOOR_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/floor.stdout")
  [[ -n "$FLOOR_PORT" ]] && break
  sleep 0.1
done
[[ -n "$FLOOR_PORT" ]] || die "the floor server did not say where it listens within 10 s"
IDLE_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
FLOOR_IDLE_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$FLOOR_PID/status")
say "webhook ready: pid $SERVER_PID, https://127.0.0.1:$PORT/mutating-pods, admin :$ADMIN_PORT, idle RSS ${IDLE_RSS_KB} kB"
say "floor ready: pid $FLOOR_PID, https://127.0.0.1:$FLOOR_PORT/mutating-pods, idle RSS ${FLOOR_IDLE_RSS_KB} kB"

# --- 4. one checked request to each ---------------------------------------------------------
check_review() {  # check_review NAME PORT CA WANT_PATCH
python3 - "$@" "$BODY" <<'EOF'
import http.client, json, ssl, sys
name, port, ca, want_patch, body_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5]
body = open(body_path, "rb").read()
ctx = ssl.create_default_context(cafile=ca)  # verifies the certificate (SAN 127.0.0.1)
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
conn.request("POST", "/mutating-pods", body=body, headers={"Content-Type": "application/json"})
resp = conn.getresponse()
data = resp.read()
text = data.decode("utf-8", "replace")
if resp.status != 200:
    sys.exit(f"{name}: status {resp.status}, body: {text[:500]}")
review = json.loads(data)
r = review.get("response") or {}
want_uid = json.loads(body)["request"]["uid"]
if r.get("uid") != want_uid or r.get("allowed") is not True:
    sys.exit(f"{name}: unexpected response fields: {json.dumps(r)[:500]}")
if want_patch:
    if '"patch":"' not in text or r.get("patchType") != "JSONPatch":
        sys.exit(f"{name}: 200 but no base64 JSONPatch in the body: {text[:500]}")
    print(f"==> check {name}: POST /mutating-pods -> 200, {len(data)} bytes, allowed, "
          f"JSONPatch of {len(r['patch'])} base64 chars, request body {len(body)} bytes")
else:
    print(f"==> check {name}: POST /mutating-pods -> 200, {len(data)} bytes, allowed, uid kept")
EOF
}
check_review webhook "$PORT" "$CA" 1 || die "the first AdmissionReview POST to the webhook did not get a valid 200 JSON patch response"
check_review floor "$FLOOR_PORT" "$FLOOR_CA" 0 || die "the first AdmissionReview POST to the floor did not get a valid 200 response"

# --- 5. load ------------------------------------------------------------------------------
export BENCH_BODY_FILE="$REPO/$BODY"
[[ "$BODY" = /* ]] && BENCH_BODY_FILE="$BODY"

# cpu_snapshot PID: "SERVER_TICKS CHILDREN_TICKS MACHINE_BUSY_TICKS MACHINE_TOTAL_TICKS".
cpu_snapshot() {
  local server children stat
  server=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}')   # utime+stime
  children=$(sed 's/.*) //' "/proc/$$/stat" | awk '{print $14 + $15}')  # cutime+cstime
  # busy: user, nice, system and steal; interrupts (loopback TCP runs in softirq) are not "other
  # processes".
  stat=$(awk '/^cpu / {busy = $2+$3+$4+$9; print busy, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  echo "$server $children $stat"
}

# run_wrk NAME SERVER CONNECTIONS SECONDS: run wrk against SERVER (webhook or floor), keep its
# output in $TMP/NAME.txt, fail on errors.
run_wrk() {
  local name=$1 server=$2 conns=$3 secs=$4
  local pid=$SERVER_PID port=$PORT
  if [[ $server == floor ]]; then pid=$FLOOR_PID; port=$FLOOR_PORT; fi
  local threads=$(( conns < THREADS ? conns : THREADS ))
  local out="$TMP/$name.txt"
  local cmd=(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 5s --latency -s "$LUA"
    "https://127.0.0.1:$port/mutating-pods")
  say "$name: ${cmd[*]}"
  local before after
  before="$(cpu_snapshot "$pid")"
  if ! "${cmd[@]}" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed ($name)"
  fi
  after="$(cpu_snapshot "$pid")"
  # CPU used during the run, in clock ticks: the server, wrk (this shell's waited-for
  # children), and the whole machine; whatever is left is other processes' load.
  local s0 w0 b0 t0 s1 w1 b1 t1
  read -r s0 w0 b0 t0 <<<"$before"
  read -r s1 w1 b1 t1 <<<"$after"
  echo "CPUSTAT server=$((s1 - s0)) wrk=$((w1 - w0)) busy=$((b1 - b0)) total=$((t1 - t0))" >>"$out"
  kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; die "the $server died during $name"; }
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
  if [[ -n "${VERBOSE:-}" ]]; then
    sed -e '/^BENCHRESULT /d' -e '/^CPUSTAT /d' -e 's/^/    /' "$out"
  fi
}

if (( WARMUP > 0 )); then
  run_wrk warmup-floor floor 16 "$WARMUP"
  run_wrk warmup-webhook webhook 16 "$WARMUP"
  say "warm-up: ${WARMUP} s at 16 connections each, not reported"
fi
for round in $(seq "$ROUNDS"); do
  for c in $CONCURRENCY; do
    # Alternate which server goes first, so a drift of the machine hits both alike.
    if (( round % 2 )); then order="floor webhook"; else order="webhook floor"; fi
    for server in $order; do
      run_wrk "$server-c$c-r$round" "$server" "$c" "$DURATION"
    done
  done
done

# --- 6. memory --------------------------------------------------------------------------
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
FLOOR_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$FLOOR_PID/status")
SERVER_THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")
METRICS_REVIEWS=$(python3 - "$ADMIN_PORT" <<'EOF' || echo null
import sys, http.client
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
c.request("GET", "/metrics")
for line in c.getresponse().read().decode().splitlines():
    if line.startswith('secret_inject_admission_reviews_total{endpoint="pods",outcome="mutated"}'):
        print(int(float(line.split()[-1])))
        break
else:
    print("null")
EOF
)
LOG_LINES=$(wc -l <"$TMP/server.log")
LOG_BYTES=$(stat -c %s "$TMP/server.log")
WARN_LINES=$(grep -c '"level":"\(WARN\|ERROR\)"' "$TMP/server.log" || true)
if (( WARN_LINES > 0 )); then
  say "the webhook logged $WARN_LINES line(s) at warn level or above during the run (first 5):"
  grep '"level":"\(WARN\|ERROR\)"' "$TMP/server.log" | head -n 5 | sed 's/^/    /'
fi

# --- 7. report ----------------------------------------------------------------------------
mkdir -p "$(dirname "$RESULTS")"
GIT_COMMIT="$(git_commit)"
export TMP CONCURRENCY DURATION ROUNDS THREADS WARMUP BODY RESULTS WRK_VERSION BUILD_SECONDS \
  LOG_LEVEL IDLE_RSS_KB FLOOR_IDLE_RSS_KB HWM_KB RSS_KB FLOOR_HWM_KB SERVER_THREADS \
  METRICS_REVIEWS LOG_LINES LOG_BYTES WARN_LINES GIT_COMMIT \
  TARGET_RPS_RATIO_C64 TARGET_P99_RATIO_C16 TARGET_RSS_KB
python3 - <<'EOF'
import datetime, json, os, statistics
env = os.environ
ncpu = os.cpu_count()

def parse(name):
    lines = open(f'{env["TMP"]}/{name}.txt').read().splitlines()
    kv = dict(p.split("=", 1) for p in next(l for l in lines if l.startswith("BENCHRESULT ")).split()[1:])
    cpu = {k: int(v) for k, v in (p.split("=", 1) for p in
           next(l for l in lines if l.startswith("CPUSTAT ")).split()[1:])}
    # Cores used on average = ticks / (wall-clock ticks of one CPU) = ticks * ncpu / total.
    cores = lambda ticks: round(ticks * ncpu / cpu["total"], 2) if cpu["total"] else 0.0
    return {
        "requests": int(kv["requests"]),
        "duration_s": round(int(kv["duration_us"]) / 1e6, 3),
        "requests_per_s": round(float(kv["rps"]), 1),
        "latency_us": {k: int(kv[f"{k}_us"]) for k in ("p50", "p90", "p99", "max")},
        "cpu_cores": {"server": cores(cpu["server"]), "wrk": cores(cpu["wrk"]),
                      "other": max(0.0, cores(cpu["busy"] - cpu["server"] - cpu["wrk"]))},
    }

rounds = int(env["ROUNDS"])
results = {}
for server in ("floor", "webhook"):
    for c in map(int, env["CONCURRENCY"].split()):
        rs = [parse(f"{server}-c{c}-r{r}") for r in range(1, rounds + 1)]
        results[(server, c)] = {
            "server": server, "connections": c, "rounds": rs,
            # Medians over the rounds: one noisy round moves neither side.
            "requests_per_s": statistics.median(r["requests_per_s"] for r in rs),
            "p50_us": statistics.median(r["latency_us"]["p50"] for r in rs),
            "p99_us": statistics.median(r["latency_us"]["p99"] for r in rs),
            "server_cores": statistics.median(r["cpu_cores"]["server"] for r in rs),
            "wrk_cores": statistics.median(r["cpu_cores"]["wrk"] for r in rs),
            "other_cores": max(r["cpu_cores"]["other"] for r in rs),
        }

def ms(us):
    return f"{us / 1000:.2f} ms"

print()
print(f"webhook (--log-level {env['LOG_LEVEL']}) against the floor server: {env['DURATION']} s per run, "
      f"{rounds} rounds alternating, medians shown; wrk threads <= {env['THREADS']}, HTTP/1.1 "
      f"keep-alive over TLS, POST {os.path.basename(os.path.dirname(env['BODY']))}/"
      f"{os.path.basename(env['BODY'])}")
print(f"{'conns':>5} | {'server':<7} | {'req/s':>8} | {'p50':>8} | {'p99':>8} | {'req/s ratio':>11} | "
      f"{'p99 ratio':>9} | CPU cores: server / wrk / other (max)")
print("-" * 108)
ratios = {}
for c in map(int, env["CONCURRENCY"].split()):
    f, w = results[("floor", c)], results[("webhook", c)]
    ratios[c] = {"requests_per_s": round(w["requests_per_s"] / f["requests_per_s"], 3),
                 "p99": round(w["p99_us"] / f["p99_us"], 3) if f["p99_us"] else None}
    for r, label in ((f, ""), (w, "")):
        extra = (f"{ratios[c]['requests_per_s']:>10.2f}x | {ratios[c]['p99']:>8.2f}x"
                 if r is w else f"{'':>11} | {'':>9}")
        print(f"{c:>5} | {r['server']:<7} | {r['requests_per_s']:>8,.0f} | {ms(r['p50_us']):>8} | "
              f"{ms(r['p99_us']):>8} | {extra} | {r['server_cores']:.2f} / {r['wrk_cores']:.2f} / "
              f"{r['other_cores']:.2f} of {ncpu}")
hwm, rss, floor_hwm = int(env["HWM_KB"]), int(env["RSS_KB"]), int(env["FLOOR_HWM_KB"])
print(f"webhook RSS: peak (VmHWM) {hwm / 1024:.1f} MiB, now {rss / 1024:.1f} MiB, idle before load "
      f"{int(env['IDLE_RSS_KB']) / 1024:.1f} MiB, {env['SERVER_THREADS']} threads; "
      f"floor peak {floor_hwm / 1024:.1f} MiB")
print(f"webhook log: {int(env['LOG_LINES']):,} lines, {int(env['LOG_BYTES']) / 1e6:.1f} MB; "
      f"mutated-reviews counter {env['METRICS_REVIEWS']} (incl. warm-up and check)")

def check(name, value, target, ok, shown, shown_target):
    return {"name": name, "value": value, "target": target,
            "result": "n/a" if ok is None else ("PASS" if ok else "MISS"),
            "shown": shown, "shown_target": shown_target}

checks = []
t = float(env["TARGET_RPS_RATIO_C64"])
v = ratios.get(64, {}).get("requests_per_s")
checks.append(check("req/s ratio at c=64", v, t, None if v is None else v >= t,
                    "not run" if v is None else f"{v:.2f}x", f">= {t}x the floor"))
t = float(env["TARGET_P99_RATIO_C16"])
v = ratios.get(16, {}).get("p99")
checks.append(check("p99 ratio at c=16", v, t, None if v is None else v <= t,
                    "not run" if v is None else f"{v:.2f}x", f"<= {t}x the floor"))
t = int(env["TARGET_RSS_KB"])
checks.append(check("peak RSS (VmHWM)", hwm, t, hwm <= t, f"{hwm / 1024:.1f} MiB", f"<= {t / 1024:.0f} MiB"))
print()
print("targets:")
for c in checks:
    print(f"  {c['result']:<4}  {c['name']:<20} {c['shown']:>10}   target {c['shown_target']}")
busiest = max(r["other_cores"] for r in results.values())
if busiest > 0.25:
    print(f"WARNING: other processes used up to {busiest:.2f} of {ncpu} cores during the runs "
          f"(a build or test?): rerun on an idle machine.")

result = {
    "benchmark": "bench/webhook-load.sh",
    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": env["GIT_COMMIT"],
    "cpus": ncpu,
    "load_generator": env["WRK_VERSION"],
    "build_seconds": None if env["BUILD_SECONDS"] == "null" else float(env["BUILD_SECONDS"]),
    "duration_s_per_run": int(env["DURATION"]),
    "rounds": rounds,
    "warmup_s": int(env["WARMUP"]),
    "log_level": env["LOG_LEVEL"],
    "body": env["BODY"],
    "runs": list(results.values()),
    "ratios": {str(c): r for c, r in ratios.items()},
    "max_other_cpu_cores": busiest,
    "webhook": {"peak_rss_kb": hwm, "rss_kb": rss, "idle_rss_kb": int(env["IDLE_RSS_KB"]),
                "threads": int(env["SERVER_THREADS"]),
                "mutated_reviews_metric": None if env["METRICS_REVIEWS"] == "null" else int(env["METRICS_REVIEWS"]),
                "log_lines": int(env["LOG_LINES"]), "log_lines_warn_or_above": int(env["WARN_LINES"])},
    "floor": {"peak_rss_kb": floor_hwm, "idle_rss_kb": int(env["FLOOR_IDLE_RSS_KB"])},
    "targets": [{k: c[k] for k in ("name", "value", "target", "result")} for c in checks],
}
with open(env["RESULTS"], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"results written to {env['RESULTS']}")
EOF
