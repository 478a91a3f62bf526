#!/usr/bin/env bash
# bench/rotation.sh: what the rotation sidecar costs while nothing changes.
#
# Builds the release binary, starts moto_server and bench/counting-proxy.py on loopback, and for
# each secret count (COUNTS, default "1 25") runs `secret-inject agent` as a sidecar
# (SECRET_INJECT_REFRESH_INTERVAL=INTERVAL, default 2s, so ROUNDS rounds take seconds) against
# the proxy, then measures, after the first write:
#   - AWS calls per round by operation (the proxy's count over ROUNDS rounds), scaled to an hour
#     at a 5-minute interval (12 rounds an hour);
#   - CPU seconds per round (utime+stime from /proc/PID/stat), and CPU while only sleeping: a
#     second sidecar with a 1 h interval, measured over IDLE_SECONDS after its first write;
#   - idle RSS (VmRSS) and peak RSS (VmHWM) at the end.
# CPU per idle hour at 5 minutes = 12 x CPU per round + the sleeping CPU scaled to an hour.
# Targets: RSS <= 8 MiB idle; one DescribeSecret per secret per round and nothing else; CPU per
# idle hour < 1 s. Prints a table and PASS/MISS; fails only on setup errors or wrong behaviour.
#
# Environment: COUNTS="1 25", INTERVAL=2s, ROUNDS=10, IDLE_SECONDS=20, SKIP_BUILD=1, KEEP_TMP=1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
COUNTS="${COUNTS:-1 25}"
INTERVAL="${INTERVAL:-2s}"
ROUNDS="${ROUNDS:-10}"
IDLE_SECONDS="${IDLE_SECONDS:-20}"
BIN="$REPO/target/x86_64-unknown-linux-gnu/release/secret-inject"
PYTHON="$REPO/.venv/bin/python"
[[ -d /dev/shm ]] || die "/dev/shm not found: the agent writes only onto tmpfs"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rotation.XXXXXX")"
MOTO_PID=""
PROXY_PID=""
cleanup() {
  local rc=$?
  stop_process "$PROXY_PID"
  stop_process "$MOTO_PID"
  show_log_tail "$rc" moto "$TMP/moto.log" 10
  remove_tmp "$rc" "$TMP"
  exit "$rc"
}
on_exit cleanup

if [[ -z "${SKIP_BUILD:-}" ]]; then
  say "building: cargo build --release --locked"
  cargo build --release --locked 2>&1 | tail -n 3
fi
[[ -x "$BIN" ]] || die "$BIN not found"
[[ -x "$PYTHON" ]] || die "$PYTHON not found (run scripts/test --setup-only)"
start_moto "$TMP"
start_counting_proxy "$MOTO_PORT" "$TMP"
say "moto on 127.0.0.1:$MOTO_PORT, counting proxy on 127.0.0.1:$PROXY_PORT"

export BIN TMP MOTO_PORT PROXY_PORT COUNTS INTERVAL ROUNDS IDLE_SECONDS
export GIT_COMMIT="$(git_commit)"
"$PYTHON" - <<'PY'
import json, os, subprocess, tempfile, time, urllib.request
import boto3

env = os.environ
BIN, TMP = env["BIN"], env["TMP"]
moto = f"http://127.0.0.1:{env['MOTO_PORT']}"
proxy = f"http://127.0.0.1:{env['PROXY_PORT']}"
counts = [int(n) for n in env["COUNTS"].split()]
rounds, idle_seconds = int(env["ROUNDS"]), int(env["IDLE_SECONDS"])
interval = env["INTERVAL"]
assert interval.endswith("s"), "INTERVAL in seconds, e.g. 2s"
interval_s = float(interval[:-1])
tick = os.sysconf("SC_CLK_TCK")
sm = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto,
                  aws_access_key_id="AKIATEST", aws_secret_access_key="test")

def counts_now():
    return json.load(urllib.request.urlopen(proxy + "/__counts"))

def reset():
    urllib.request.urlopen(urllib.request.Request(proxy + "/__reset", method="POST")).read()

def cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)

def start(n, refresh, out):
    arns = [sm.create_secret(Name=f"bench/{refresh}/{n}/{i}-{time.time_ns()}",
                             SecretString=json.dumps({"k": "v" * 64}))["ARN"] for i in range(n)]
    plan = json.dumps([{"name": f"s{i}", "arn": a} for i, a in enumerate(arns)])
    agent_env = {"PATH": os.environ["PATH"], "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_ENDPOINT_URL": proxy, "AWS_ACCESS_KEY_ID": "AKIATEST",
                 "AWS_SECRET_ACCESS_KEY": "test", "SECRET_INJECT_SECRETS": plan,
                 "SECRET_INJECT_OUTPUT_DIR": out, "SECRET_INJECT_REFRESH_INTERVAL": refresh,
                 "SECRET_INJECT_TERMINATION_LOG": os.path.join(TMP, "termination-log")}
    log = open(os.path.join(TMP, f"agent-{n}-{refresh}.log"), "w")
    p = subprocess.Popen([BIN, "--log-level", "warn", "agent"], env=agent_env, stderr=log)
    deadline = time.time() + 30
    while not os.path.exists(os.path.join(out, f"s{n-1}")):
        assert p.poll() is None, f"the sidecar exited: {open(log.name).read()}"
        assert time.time() < deadline, "no first write within 30 s"
        time.sleep(0.02)
    return p

rows = []
for n in counts:
    out = tempfile.mkdtemp(dir="/dev/shm", prefix="rotation-")
    p = start(n, interval, out)
    time.sleep(interval_s * 0.5)
    reset()
    c0 = cpu(p.pid)
    time.sleep(interval_s * rounds)
    c1 = cpu(p.pid)
    calls = counts_now()
    rss, hwm = status(p.pid, "VmRSS"), status(p.pid, "VmHWM")
    p.terminate(); p.wait()
    describes = calls.get("secretsmanager.DescribeSecret", 0)
    others = {k: v for k, v in calls.items() if k != "secretsmanager.DescribeSecret"}
    per_round = describes / rounds
    # Sleeping cost: a sidecar with a 1 h interval, after its first write.
    out2 = tempfile.mkdtemp(dir="/dev/shm", prefix="rotation-idle-")
    q = start(n, "3600s", out2)
    time.sleep(1)
    i0 = cpu(q.pid)
    time.sleep(idle_seconds)
    i1 = cpu(q.pid)
    idle_rss = status(q.pid, "VmRSS")
    q.terminate(); q.wait()
    cpu_round = (c1 - c0) / rounds
    sleeping_per_hour = (i1 - i0) * 3600 / idle_seconds
    rows.append({
        "secrets": n, "describe_per_round": per_round, "other_calls": others,
        "calls_per_hour_at_5m": per_round * 12, "cpu_s_per_round": cpu_round,
        "cpu_s_per_idle_hour_at_5m": cpu_round * 12 + sleeping_per_hour,
        "sleeping_cpu_s_per_hour": sleeping_per_hour,
        "rss_kib_after_rounds": rss, "hwm_kib": hwm, "rss_kib_sleeping": idle_rss,
    })

print()
print(f"rotation sidecar, commit {env['GIT_COMMIT']}, {rounds} rounds at {interval}, sleeping {idle_seconds}s")
print(f"{'secrets':>7} {'Describe/round':>14} {'other calls':>12} {'calls/h @5m':>11} {'CPU s/round':>11} {'CPU s/idle h @5m':>16} {'RSS KiB':>8} {'HWM KiB':>8} {'sleep RSS':>9}")
ok = True
for r in rows:
    print(f"{r['secrets']:>7} {r['describe_per_round']:>14.1f} {sum(r['other_calls'].values()):>12} {r['calls_per_hour_at_5m']:>11.0f} {r['cpu_s_per_round']:>11.4f} {r['cpu_s_per_idle_hour_at_5m']:>16.3f} {r['rss_kib_after_rounds']:>8} {r['hwm_kib']:>8} {r['rss_kib_sleeping']:>9}")
for r in rows:
    checks = [
        ("one DescribeSecret per secret per round", abs(r["describe_per_round"] - r["secrets"]) <= r["secrets"] * 0.15),
        ("nothing but DescribeSecret while unchanged", not r["other_calls"]),
        ("idle RSS <= 8 MiB", r["rss_kib_sleeping"] <= 8192 and r["rss_kib_after_rounds"] <= 8192),
        ("CPU per idle hour < 1 s", r["cpu_s_per_idle_hour_at_5m"] < 1.0),
    ]
    for name, good in checks:
        print(f"  {r['secrets']:>2} secrets: {'PASS' if good else 'MISS'} {name}")
        if name.startswith("nothing") and not good:
            ok = False
os.makedirs("bench/results", exist_ok=True)
json.dump(rows, open("bench/results/rotation.json", "w"), indent=2)
if not ok:
    raise SystemExit("the sidecar called more than DescribeSecret while nothing changed")
PY
