# shellcheck shell=bash
# bench/lib.sh: helpers shared by the bench/*.sh scripts. Sourced, not run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# say MESSAGE: a progress line on stdout.
say() { printf '==> %s\n' "$*"; }

# die MESSAGE: an error line on stderr, named after the running script, then exit 1.
die() { printf 'bench/%s: ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# apt_install PACKAGE...: apt-get install, through sudo unless running as root.
apt_install() {
  local sudo=()
  (( $(id -u) == 0 )) || sudo=(sudo)
  say "running: ${sudo[*]:+${sudo[*]} }apt-get update && apt-get install -y $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@"
}

# on_exit FUNCTION: run FUNCTION when the script exits, also after Ctrl-C (exit status 130)
# and SIGTERM (143).
on_exit() {
  # shellcheck disable=SC2064  # FUNCTION's name is meant to be expanded now
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# stop_process PID: SIGTERM, up to 5 s to exit, then SIGKILL, and reap it. Nothing to do when
# PID is empty or the process is gone.
stop_process() {
  local pid=$1
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# show_log_tail RC NAME FILE LINES: when RC != 0 and FILE is not empty, its last LINES lines on
# stderr under "--- last lines of the NAME log (FILE) ---".
show_log_tail() {
  local rc=$1 name=$2 file=$3 lines=$4
  if (( rc != 0 )) && [[ -s "$file" ]]; then
    echo "--- last lines of the $name log ($file) ---" >&2
    tail -n "$lines" "$file" >&2 || true
  fi
}

# remove_tmp RC DIR: delete the temporary directory DIR, or keep it (and say where) when
# RC != 0 or KEEP_TMP=1.
remove_tmp() {
  local rc=$1 dir=$2
  if [[ "${KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then
    echo "temporary files kept in $dir" >&2
  else
    rm -rf "$dir"
  fi
}

# git_commit: HEAD's short hash, with "+dirty" when src/, Cargo.toml or Cargo.lock have
# uncommitted changes; "unknown" outside a git checkout.
git_commit() {
  local commit
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    commit="$commit+dirty"
  fi
  echo "$commit"
}

# start_moto LOGDIR: start moto_server (.venv) on a free loopback port; sets MOTO_PID and
# MOTO_PORT. The caller stops it (stop_process "$MOTO_PID").
start_moto() {
  local logdir=$1 moto
  moto="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/moto_server"
  [[ -x "$moto" ]] || die "$moto not found (run scripts/test --setup-only)"
  # The log exists before the process starts: the background redirection may open it later
  # than the first look below.
  : >"$logdir/moto.log"
  say "starting: $moto -H 127.0.0.1 -p 0"
  "$moto" -H 127.0.0.1 -p 0 >"$logdir/moto.stdout" 2>"$logdir/moto.log" &
  MOTO_PID=$!
  MOTO_PORT=""
  for _ in $(seq 300); do  # up to 30 s
    kill -0 "$MOTO_PID" 2>/dev/null || die "moto_server exited during start-up"
    MOTO_PORT="$(sed -n 's#.*Running on http://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$logdir/moto.log" | head -n 1)"
    [[ -n "$MOTO_PORT" ]] && break
    sleep 0.1
  done
  [[ -n "$MOTO_PORT" ]] || die "moto_server printed no 'Running on http://127.0.0.1:PORT' within 30 s"
}

# start_counting_proxy UPSTREAM_PORT LOGDIR: start bench/counting-proxy.py in front of
# UPSTREAM_PORT; sets PROXY_PID and PROXY_PORT. The caller stops it.
start_counting_proxy() {
  local upstream=$1 logdir=$2 proxy
  proxy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/counting-proxy.py"
  : >"$logdir/proxy.stdout"
  say "starting: python3 $proxy $upstream"
  python3 "$proxy" "$upstream" >"$logdir/proxy.stdout" 2>"$logdir/proxy.log" &
  PROXY_PID=$!
  PROXY_PORT=""
  for _ in $(seq 100); do  # up to 10 s
    kill -0 "$PROXY_PID" 2>/dev/null || die "the counting proxy exited during start-up"
    PROXY_PORT="$(sed -n 's#^listening on \([0-9][0-9]*\)$#\1#p' "$logdir/proxy.stdout" | head -n 1)"
    [[ -n "$PROXY_PORT" ]] && break
    sleep 0.1
  done
  [[ -n "$PROXY_PORT" ]] || die "the counting proxy printed no 'listening on PORT' within 10 s"
}
