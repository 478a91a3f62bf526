-- wrk script for bench/webhook-load.sh: POST one AdmissionReview per request and count
-- every response whose status is not 200.
--
-- The body comes from the file named by BENCH_BODY_FILE. At the end, done() prints one
-- line starting with "BENCHRESULT" (key=value pairs, latencies in microseconds) that the
-- shell script parses; wrk's own human-readable report is printed above it.

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file == nil or body_file == "" then
  error("BENCH_BODY_FILE is not set")
end
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

-- Per-thread state (each wrk thread runs its own copy of this script).
non200 = 0
first_bad_status = 0

-- Main-state bookkeeping: remember every thread so done() can read its counters.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, resp_body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad_status == 0 then
      first_bad_status = status
    end
  end
end

function done(summary, latency, requests)
  local bad, first_bad = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non200") or 0)
    local s = thread:get("first_bad_status") or 0
    if first_bad == 0 and s ~= 0 then
      first_bad = s
    end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCHRESULT requests=%d duration_us=%d bytes=%d rps=%.1f"
      .. " p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f"
      .. " non200=%d first_bad_status=%d"
      .. " err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    bad, first_bad,
    e.connect, e.read, e.write, e.status, e.timeout))
end
