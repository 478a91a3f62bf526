#!/usr/bin/env bash
# bench/many-secrets.sh: what one pod start costs the agent as the pod's secrets grow.
#
# Builds the release binary, starts moto_server (the AWS mock the tests use) and
# bench/counting-proxy.py in front of it on free loopback ports, creates the secrets, then for
# each secret count (COUNTS, default 1 5 25):
#   - renders the agent's plan the way the webhook does: a Pod with secret-arn.<n> annotations
#     through `secret-inject inject -f -` (the same mutation function as the webhook), and takes
#     the injected container's environment;
#   - runs `secret-inject --log-level warn agent` with that environment and static credentials
#     against the proxy, WARMUP + RUNS times, each time into an empty tmpfs directory; every run
#     is checked (exit 0, every file holds its secret, the termination message counts the files);
#   - counts the AWS calls of each run per operation (the proxy's count; the same in every run,
#     or the script fails), and measures wall time (spawn to exit) and peak RSS.
# Peak RSS: /usr/bin/time -f %M (GNU time, RSS_RUNS separate runs) when it is installed; else the
# agent's VmHWM from /proc/PID/status, sampled until it exits (a lower bound, said so).
#
# Prints a table and PASS/MISS against the targets; JSON results go to
# bench/results/many-secrets.json (not committed). Fails (exit != 0) on any setup error, failed
# run or wrong file; a missed target is reported as MISS and does not fail the script.
#
# Environment (all optional):
#   COUNTS="1 5 25"   secret counts, one row each (the targets need 1 and 25)
#   RUNS=15           timed runs per count
#   WARMUP=2          unreported runs per count first
#   RSS_RUNS=5        runs per count under /usr/bin/time for peak RSS
#   RESULTS=bench/results/many-secrets.json   where the JSON results go
#   SKIP_BUILD=1      use the existing target/x86_64-unknown-linux-gnu/release/secret-inject
#   KEEP_TMP=1        keep the temporary directory (moto and proxy logs, per-run stderr)
#   GNU_TIME=/usr/bin/time   GNU time; a path that does not exist selects the VmHWM sampling
#
# Loopback only: moto, the proxy and the agent talk over 127.0.0.1, and the agent runs with
# AWS_EC2_METADATA_DISABLED=true. The proxy (Python) and moto add their own latency to every
# call, the same for every count: the wall times are upper bounds of the agent's own cost.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # say, die, cleanup helpers, git_commit

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

COUNTS="${COUNTS:-1 5 25}"
RUNS="${RUNS:-15}"
WARMUP="${WARMUP:-2}"
RSS_RUNS="${RSS_RUNS:-5}"
RESULTS="${RESULTS:-bench/results/many-secrets.json}"
TRIPLE=x86_64-unknown-linux-gnu                      # .cargo/config.toml's build.target
BIN="$REPO/target/$TRIPLE/release/secret-inject"
PYTHON="$REPO/.venv/bin/python"
MOTO="$REPO/.venv/bin/moto_server"
GNU_TIME="${GNU_TIME:-/usr/bin/time}"

# Targets (reported, not gated).
TARGET_RSS_KB=15360          # agent peak RSS <= 15 MiB
TARGET_WALL_RATIO=2          # 25 secrets' median wall time <= 2x one secret's
BATCH_SIZE=20                # secrets per BatchGetSecretValue: ceil(N/20) Secrets Manager calls

for var in RUNS WARMUP RSS_RUNS; do
  [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a whole number, got '${!var}'"
done
(( RUNS >= 1 )) || die "RUNS must be >= 1"
for n in $COUNTS; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] && (( n <= 100 )) || die "COUNTS must hold numbers 1..100, got '$n'"
done
[[ -d /dev/shm ]] || die "/dev/shm not found: the agent writes only onto tmpfs"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/many-secrets.XXXXXX")"
OUT="$(mktemp -d -p /dev/shm many-secrets.XXXXXX)"   # tmpfs: the agent refuses disk
MOTO_PID=""
PROXY_PID=""
cleanup() {
  local rc=$?
  stop_process "$PROXY_PID"
  stop_process "$MOTO_PID"
  show_log_tail "$rc" moto "$TMP/moto.log" 10
  show_log_tail "$rc" proxy "$TMP/proxy.log" 10
  rm -rf "$OUT"   # holds the secrets
  remove_tmp "$rc" "$TMP"
  exit "$rc"
}
on_exit cleanup

# --- 1. tools -------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 not found on PATH"
if [[ ! -x "$MOTO" || ! -x "$PYTHON" ]]; then
  say "preparing the test tools: scripts/test --setup-only (.venv with moto_server)"
  # shellcheck disable=SC2065  # scripts/test is the project's script, not test(1)
  scripts/test --setup-only >"$TMP/setup.log" 2>&1 || { cat "$TMP/setup.log" >&2; die "scripts/test --setup-only failed"; }
fi
[[ -x "$MOTO" ]] || die "$MOTO not found (run scripts/test --setup-only)"
"$PYTHON" -c 'import yaml' 2>/dev/null || die "$PYTHON cannot import yaml (moto's dependency); run scripts/test --setup-only"
MOTO_VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("moto"))')"
RSS_SOURCE="gnu-time"
if [[ ! -x "$GNU_TIME" ]]; then
  RSS_SOURCE="vmhwm-sampled"
  say "$GNU_TIME not found: peak RSS from the agent's VmHWM in /proc, sampled (a lower bound)"
fi

# --- 2. build -------------------------------------------------------------------------------
if [[ -n "${SKIP_BUILD:-}" ]]; then
  say "SKIP_BUILD set: using the existing $BIN"
else
  command -v cargo >/dev/null || die "cargo not found on PATH"
  say "building: cargo build --release --locked"
  cargo build --release --locked 2>&1 | tail -n 3
fi
[[ -x "$BIN" ]] || die "$BIN not found or not executable"

# --- 3. moto and the counting proxy (bench/lib.sh) ------------------------------------------
start_moto "$TMP"
start_counting_proxy "$MOTO_PORT" "$TMP"
say "moto $MOTO_VERSION on 127.0.0.1:$MOTO_PORT, counting proxy on 127.0.0.1:$PROXY_PORT"

# --- 4. runs, checks, report (Python harness) -----------------------------------------------
mkdir -p "$(dirname "$RESULTS")"
GIT_COMMIT="$(git_commit)"
export TMP OUT BIN GNU_TIME MOTO_PORT PROXY_PORT COUNTS RUNS WARMUP RSS_RUNS RESULTS RSS_SOURCE \
  MOTO_VERSION GIT_COMMIT TARGET_RSS_KB TARGET_WALL_RATIO BATCH_SIZE
"$PYTHON" - <<'EOF'
import datetime, json, math, os, secrets, shutil, statistics, subprocess, sys, time
import http.client
import yaml

env = os.environ
TMP, OUT, BIN = env["TMP"], env["OUT"], env["BIN"]
COUNTS = [int(n) for n in env["COUNTS"].split()]
RUNS, WARMUP, RSS_RUNS = int(env["RUNS"]), int(env["WARMUP"]), int(env["RSS_RUNS"])
RSS_SOURCE = env["RSS_SOURCE"]
MOTO_PORT, PROXY_PORT = int(env["MOTO_PORT"]), int(env["PROXY_PORT"])
HOME = os.path.join(TMP, "home")
os.makedirs(HOME, exist_ok=True)
TERMINATION_LOG = os.path.join(TMP, "termination-log")
REGION = "us-east-1"

def fail(msg):
    print(f"bench/many-secrets.sh: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)

def http_json(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body, headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, (json.loads(data) if data else None)

def moto(target, body):
    service = target.split(".")[0]
    status, answer = http_json(MOTO_PORT, "POST", "/", json.dumps(body).encode(), {
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1",
        "Authorization": f"AWS4-HMAC-SHA256 Credential=test/20260101/{REGION}/{service}/aws4_request, "
                         "SignedHeaders=host, Signature=00"})
    if status != 200:
        fail(f"{target}: HTTP {status}: {answer}")
    return answer

# The secrets: JSON values of a realistic size.
values, arns = {}, {}
for i in range(1, max(COUNTS) + 1):
    name = f"s{i:02d}"
    values[name] = json.dumps({"username": f"app-{i}", "password": secrets.token_urlsafe(24),
                               "host": f"db-{i}.bench.internal", "port": 5432})
    arns[name] = moto("secretsmanager.CreateSecret",
                      {"Name": f"bench/{name}", "SecretString": values[name]})["ARN"]
print(f"==> {len(arns)} secrets created in moto ({REGION})")

def plan_env(n):
    """The injected container's env for a pod with n secrets, rendered by `secret-inject inject`."""
    annotations = {"secrets.k8s.aws/mount-path": OUT}
    for i in range(1, n + 1):
        annotations[f"secrets.k8s.aws/secret-arn.s{i:02d}"] = arns[f"s{i:02d}"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"bench-{n}", "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "nginx",
                                    "securityContext": {"runAsUser": 1000}}]}}
    r = subprocess.run([BIN, "inject", "-f", "-"], input=json.dumps(pod).encode(),
                       capture_output=True)
    if r.returncode != 0:
        fail(f"secret-inject inject failed for {n} secrets: {r.stderr.decode()[-2000:]}")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    init = docs[0]["spec"]["initContainers"][0]
    if init["name"] != "secrets-init-container":
        fail(f"unexpected injected container {init['name']}")
    out = {}
    for var in init.get("env", []):
        if "value" not in var:
            fail(f"{var['name']} is not rendered as a value")
        out[var["name"]] = var["value"]
    return out

def clear_out():
    for name in os.listdir(OUT):
        path = os.path.join(OUT, name)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)

def proxy_counts():
    status, counts = http_json(PROXY_PORT, "GET", "/__counts")
    if status != 200:
        fail(f"proxy /__counts: HTTP {status}")
    return counts

def vmhwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

def run(n, agent_env, label, rss=False):
    """One pod start: returns (wall_ms, calls by operation, peak RSS kB or None)."""
    clear_out()
    if os.path.lexists(TERMINATION_LOG):
        os.unlink(TERMINATION_LOG)
    http_json(PROXY_PORT, "POST", "/__reset")
    argv = [BIN, "--log-level", "warn", "agent"]
    rss_file = os.path.join(TMP, "rss.txt")
    if rss and RSS_SOURCE == "gnu-time":
        # GNU time is a small C program: the peak RSS it reports is the agent's own.
        argv = [env["GNU_TIME"], "-f", "%M", "-o", rss_file, "--"] + argv
    err_path = os.path.join(TMP, f"agent-{n}-{label}.stderr")
    peak = None
    with open(err_path, "wb") as err:
        start = time.perf_counter()
        p = subprocess.Popen(argv, env=agent_env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, cwd=HOME)
        if rss and RSS_SOURCE == "vmhwm-sampled":
            while p.poll() is None:
                v = vmhwm(p.pid)
                if v is not None:
                    peak = max(peak or 0, v)
                time.sleep(0.0005)
        rc = p.wait()
        wall_ms = (time.perf_counter() - start) * 1000
    stderr = open(err_path, "rb").read().decode("utf-8", "replace")
    tl = open(TERMINATION_LOG).read() if os.path.exists(TERMINATION_LOG) else ""
    if rc != 0:
        fail(f"{n} secrets, run {label}: exit {rc}\n--- stderr ---\n{stderr[-3000:]}\n"
             f"--- termination log ---\n{tl}")
    for i in range(1, n + 1):
        name = f"s{i:02d}"
        try:
            got = open(os.path.join(OUT, name)).read()
        except OSError as e:
            fail(f"{n} secrets, run {label}: {name} cannot be read: {e}")
        if got != values[name]:
            fail(f"{n} secrets, run {label}: {name} does not hold its secret")
    if f"wrote {n} file(s) for {n} secret(s)" not in tl:
        fail(f"{n} secrets, run {label}: unexpected termination message: {tl}")
    if rss and RSS_SOURCE == "gnu-time":
        peak = int(open(rss_file).read().split()[-1])
    return wall_ms, proxy_counts(), peak

def pct(values, p):
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

rows = []
for n in COUNTS:
    agent_env = {"PATH": "/usr/bin:/bin", "HOME": HOME, "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_ACCESS_KEY_ID": "AKIABENCHBENCHBENCH0", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{PROXY_PORT}",
                 "SECRET_INJECT_TERMINATION_LOG": TERMINATION_LOG} | plan_env(n)
    for i in range(WARMUP):
        run(n, agent_env, f"warmup{i}")
    walls, calls = [], None
    for i in range(RUNS):
        wall, counts, _ = run(n, agent_env, f"run{i}")
        walls.append(wall)
        if calls is None:
            calls = counts
        elif counts != calls:
            fail(f"{n} secrets: run {i} made calls {counts}, run 0 made {calls}")
    peaks = [run(n, agent_env, f"rss{i}", rss=True)[2] for i in range(RSS_RUNS)]
    peaks = [p for p in peaks if p is not None]
    rows.append({"secrets": n, "calls": calls,
                 "secrets_manager_calls": sum(v for k, v in calls.items()
                                              if k.startswith("secretsmanager.")),
                 "wall_ms": {"min": round(min(walls), 2),
                             "median": round(statistics.median(walls), 2),
                             "p90": round(pct(walls, 90), 2), "max": round(max(walls), 2)},
                 "peak_rss_kb": max(peaks) if peaks else None,
                 "samples": {"wall_ms": [round(w, 3) for w in walls], "rss_kb": peaks}})
    print(f"==> {n} secret(s): {RUNS} timed runs, {RSS_RUNS} RSS runs")

# --- report ---
print()
print(f"secret-inject agent, one pod start per run, secrets fetched from moto {env['MOTO_VERSION']} "
      f"through a counting proxy on 127.0.0.1; {RUNS} timed runs per row")
hdr = (f"{'secrets':>7} | {'AWS calls per pod start':<44} | {'wall min':>9} | {'median':>9} | "
       f"{'p90':>9} | {'peak RSS':>10}")
print(hdr)
print("-" * len(hdr))
for r in rows:
    calls = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(r["calls"].items()))
    w = r["wall_ms"]
    rss = f"{r['peak_rss_kb']:,} kB" if r["peak_rss_kb"] is not None else "n/a"
    print(f"{r['secrets']:>7} | {calls:<44} | {w['min']:>6.1f} ms | {w['median']:>6.1f} ms | "
          f"{w['p90']:>6.1f} ms | {rss:>10}")

checks = []
def check(name, ok, shown, target):
    checks.append({"name": name, "result": "PASS" if ok else "MISS", "shown": shown,
                   "target": target})
batch = int(env["BATCH_SIZE"])
for r in rows:
    want = math.ceil(r["secrets"] / batch)
    check(f"Secrets Manager calls, {r['secrets']} secret(s)", r["secrets_manager_calls"] == want,
          str(r["secrets_manager_calls"]), f"ceil({r['secrets']}/{batch}) = {want}")
by_n = {r["secrets"]: r for r in rows}
ratio_target = float(env["TARGET_WALL_RATIO"])
if 1 in by_n and 25 in by_n:
    one, many = by_n[1]["wall_ms"]["median"], by_n[25]["wall_ms"]["median"]
    check("wall time, 25 vs 1 secret (median)", many <= ratio_target * one,
          f"{many:.1f} ms = {many / one:.2f}x {one:.1f} ms", f"<= {ratio_target:g}x")
rss_target = int(env["TARGET_RSS_KB"])
peaks = [r["peak_rss_kb"] for r in rows if r["peak_rss_kb"] is not None]
if peaks:
    check("peak RSS, any row", max(peaks) <= rss_target, f"{max(peaks):,} kB",
          f"<= {rss_target:,} kB (15 MiB)" + (" (VmHWM sampled: a lower bound)"
                                              if RSS_SOURCE == "vmhwm-sampled" else ""))
print()
print("targets:")
for c in checks:
    print(f"  {c['result']:<4}  {c['name']:<40} {c['shown']:>26}   target {c['target']}")
print(f"notes: wall time is spawn to exit (all files written by then), moto's and the Python "
      f"proxy's latency included; peak RSS from {RSS_RUNS} run(s) per row "
      f"({'GNU time -f %M' if RSS_SOURCE == 'gnu-time' else 'VmHWM sampled from /proc'}); "
      f"{os.cpu_count()} cores shared by the agent, moto, the proxy and this script.")

result = {
    "benchmark": "bench/many-secrets.sh",
    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": env["GIT_COMMIT"], "cpus": os.cpu_count(), "moto": env["MOTO_VERSION"],
    "runs": RUNS, "warmup_runs": WARMUP, "rss_runs": RSS_RUNS, "rss_source": RSS_SOURCE,
    "rows": rows, "targets": checks,
}
with open(env["RESULTS"], "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
print(f"results written to {env['RESULTS']}")
EOF
