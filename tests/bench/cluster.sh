#!/usr/bin/env bash
# Registration benchmark of registrar replicas sharing one etcd: `kubepbx registrar` × 1 and × 3
# under sipp, with a real etcd, and how fast a registration reaches the other replicas.
#
#   KUBEPBX_BIN=$CARGO_TARGET_DIR/release/kubepbx tests/bench/cluster.sh      (what `make bench` runs)
#   SETUPS=3 RATES="4000 6000 8000" KUBEPBX_BIN=… tests/bench/cluster.sh    (3 replicas only)
#
# On 127.0.0.1 only:
#   1. etcd (ETCD_BIN, one member, its data directory in the work directory) on free ports.
#      Before each setup its history is compacted and its backend defragmented (kubepbx does not
#      compact, and every registration leaves a revision behind), then `kubepbx apply` writes
#      USERS + 2 × SAMPLES extensions (tests/bench/gen_manifests.py) under a fresh prefix
#      (/bench-1, /bench-3, …).
#   2. For each replica count N of SETUPS: N `kubepbx registrar` processes (replica ids r0…,
#      --digest-challenge md5 and --ban-threshold 0 for the reasons register.sh gives), each
#      with its own SIP, internal and HTTP port; every /readyz must answer 200.
#   3. throughput: tests/sipp/register_digest.xml over UDP from SIPP_INSTANCES sipp processes in
#      parallel, instance i sending to replica i mod N, each with its own consecutive share of
#      the USERS users (1001…) and a fixed local port, so a user always registers through the
#      same replica with the same Contact (one binding per user). First one "create" step: every
#      user once at CREATE_RATE/s, each registration a new binding. Then the "refresh" steps:
#      each rate of RATES in turn (max(MIN_STEP_CALLS, rate × STEP_SECONDS) calls, the users
#      reused cyclically, so every registration refreshes an existing binding; the scenario
#      sends a new Call-ID each time, which kubepbx stores as a rewrite of the binding, not as
#      the value-less lease move of a same-Call-ID refresh) until a step is not clean (more than 0.1 % of its calls failed, or sipp achieved less than
#      MIN_ACHIEVED_PCT % of the target rate); REFINE_STEPS more steps bisect between the last
#      clean and the first failed rate (to multiples of 500/s). Per step: CPU µs per successful
#      registration of all registrars together and of etcd (utime+stime from /proc/PID/stat,
#      read ETCD_SETTLE s after the step so the registrars' last batched writes are in), and
#      etcd's work per successful registration from its Prometheus /metrics on the client URL,
#      read before and after (ETCD_SETTLE s later): etcd_server_proposals_committed_total (raft
#      entries: a transaction counts once however many keys it writes),
#      etcd_mvcc_put_total (keys written) and etcd_mvcc_txn_total (write transactions of more
#      than one operation), and the leases granted (etcd_debugging_lease_granted_total).
#   4. propagation (N ≥ 2): tests/bench/propagation.py registers SAMPLES users the sipp load
#      never uses, one at a time, through replica A over UDP (MD5 digest) and polls replica B's
#      GET /api/v1/registrations?extension=…&domain=… until the binding is listed; the delay from
#      the 200 OK to the first answer listing it, p50/p90/p99/max. Once on the idle cluster, once
#      (SAMPLES other users) while sipp refreshes at PROP_LOAD_PCT % of the highest clean rate.
#   5. every registrar must then list the same bindings: the length of GET /api/v1/registrations
#      and the kubepbx_registrations gauge of each, against the number registered.
# Then the summary with the targets from the issue (at least 6,500 clean registrations/s with 3
# replicas; propagation p99 under 50 ms), reported as met / NOT met, never asserted (also in
# $WORK/results.txt). The exit status is 0 when every requested figure was measured, 1 when one
# could not be (etcd or a registrar did not start, a smoke registration failed, a process
# crashed, the propagation test failed), 2 for errors of this script or its environment.
#
# Environment (defaults in brackets):
#   KUBEPBX_BIN        the kubepbx binary (required)
#   ETCD_BIN           [etcd on PATH] etcd 3.4 or later (Debian etcd-server)
#   SETUPS             [1 3]    registrar replica counts, one setup each
#   RATES              [2000 4000 6000 6500 8000 10000 13000 16000 20000 25000 30000 35000
#                               40000]  refresh steps (registrations/s)
#   USERS              [10000]  distinct users of the throughput test (extensions 1001…)
#   CREATE_RATE        [2000]   rate of the create step (USERS registrations)
#   STEP_SECONDS       [3]      MIN_STEP_CALLS [10000]   MIN_ACHIEVED_PCT [95]   REFINE_STEPS [2]
#   SIPP_INSTANCES     []       sipp processes per setup; empty: 2 with one replica, one per
#                               replica with more (instance i sends to replica i mod N)
#   ETCD_SETTLE        [2]      seconds between the end of a step and reading etcd's counters
#   SAMPLES            [200]    propagation samples, idle and under load each (users
#                               1001 + USERS …, never used by sipp)
#   PROP_LOAD_PCT      [50]     load during the second propagation measurement, in % of the
#                               setup's highest clean rate
#   PROP_LOAD_SECONDS  [20]     how long that load runs (the samples start 2 s into it)
#   PROP_TIMEOUT       [5]      seconds a sample waits for its binding on the other replica
#   NOISE_PCT          [25]     a step during which other processes used more than this % of a
#                               core is marked and run again (at most twice); the create step is
#                               only marked (run again, it would refresh what it created)
#   REGISTRAR_ARGS     []       more `kubepbx registrar` arguments (split on spaces)
#   ETCD_ARGS          []       more etcd arguments (split on spaces)
#   SIPP_BUFF          [4194304] sipp's socket buffers (-buff_size)
#   BENCH_WORK         [a new /tmp/kubepbx-cluster.XXXXXX]  logs, etcd's data, sipp statistics;
#                               a directory given here is kept, the default one is deleted after
#                               a successful run unless BENCH_KEEP=1
#
# Needs sipp (sip-tester), etcd (etcd-server), python3, curl (scripts/install-deps.sh bench
# installs them). Helpers shared with the other benchmarks are in tests/bench/lib.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
stat_py=$here/sipp_stat.py
prop_py=$here/propagation.py

ETCD_BIN=${ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
SETUPS=${SETUPS:-1 3}
RATES=${RATES:-2000 4000 6000 6500 8000 10000 13000 16000 20000 25000 30000 35000 40000}
USERS=${USERS:-10000}
CREATE_RATE=${CREATE_RATE:-2000}
STEP_SECONDS=${STEP_SECONDS:-3}
MIN_STEP_CALLS=${MIN_STEP_CALLS:-10000}
MIN_ACHIEVED_PCT=${MIN_ACHIEVED_PCT:-95}
REFINE_STEPS=${REFINE_STEPS:-2}
SIPP_INSTANCES=${SIPP_INSTANCES:-}
ETCD_SETTLE=${ETCD_SETTLE:-2}
SAMPLES=${SAMPLES:-200}
PROP_LOAD_PCT=${PROP_LOAD_PCT:-50}
PROP_LOAD_SECONDS=${PROP_LOAD_SECONDS:-20}
PROP_TIMEOUT=${PROP_TIMEOUT:-5}
NOISE_PCT=${NOISE_PCT:-25}
SIPP_BUFF=${SIPP_BUFF:-4194304}
DOMAIN=pbx.example.com
FIRST_USER=1001
ADMIN_TOKEN=kubepbx-bench-admin-token
TARGET_RATE=6500 # clean registrations/s with 3 replicas (issue 4)
TARGET_P99_MS=50 # propagation p99

for cmd in sipp python3 curl getconf pgrep; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (scripts/install-deps.sh bench installs the tools)"
done
[ -x "$ETCD_BIN" ] || die "etcd not found (ETCD_BIN=$ETCD_BIN; apt-get install etcd-server, or scripts/install-deps.sh bench)"
[ -n "${KUBEPBX_BIN:-}" ] || die "KUBEPBX_BIN is not set (make bench sets it)"
[ -x "$KUBEPBX_BIN" ] || die "KUBEPBX_BIN=$KUBEPBX_BIN is not an executable"
for n in "$USERS" "$CREATE_RATE" "$STEP_SECONDS" "$MIN_STEP_CALLS" "$MIN_ACHIEVED_PCT" "$REFINE_STEPS" \
  "$ETCD_SETTLE" "$SAMPLES" "$PROP_LOAD_PCT" "$PROP_LOAD_SECONDS" "$PROP_TIMEOUT" "$NOISE_PCT" "$SIPP_BUFF"; do
  [[ $n =~ ^[0-9]+$ ]] || die "not a number: $n"
done
[[ $SIPP_INSTANCES =~ ^([1-9][0-9]*)?$ ]] || die "SIPP_INSTANCES: not a positive number: $SIPP_INSTANCES"
for r in $RATES; do
  [[ $r =~ ^[1-9][0-9]*$ ]] || die "RATES: not a positive number: $r"
done
for n in $SETUPS; do
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "SETUPS: not a replica count (1…99): $n"
done
[ -n "${SETUPS// /}" ] || die "SETUPS is empty"
if [ "$CREATE_RATE" -lt 1 ] || [ "$SAMPLES" -lt 1 ]; then
  die "CREATE_RATE and SAMPLES must be at least 1"
fi

init_work kubepbx-cluster results.txt

# ---------------------------------------------------------------------------------------------
# etcd.
etcd_pid=
etcd_url=

start_etcd() {
  local client peer i try
  for try in 1 2 3; do # a free port can be taken by another program before etcd binds it
    client=$(free_port tcp)
    peer=$(free_port tcp)
    [ "$client" != "$peer" ] || continue
    etcd_url=http://127.0.0.1:$client
    rm -rf "$WORK/etcd-data"
    log "etcd: starting on $etcd_url (peer port $peer, data in $WORK/etcd-data)"
    # shellcheck disable=SC2086 # ETCD_ARGS is split on spaces on purpose
    "$ETCD_BIN" --name bench --data-dir "$WORK/etcd-data" \
      --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "bench=http://127.0.0.1:$peer" ${ETCD_ARGS:-} \
      >"$WORK/etcd.log" 2>&1 </dev/null &
    etcd_pid=$!
    pids+=("$etcd_pid")
    for ((i = 0; i < 300; i++)); do
      kill -0 "$etcd_pid" 2>/dev/null || break
      if curl -fsS --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; then
        log "etcd: healthy after $((i / 10)).$((i % 10)) s"
        return 0
      fi
      sleep 0.1
    done
    forget_pid "$etcd_pid"
    if ! grep -qi 'address already in use' "$WORK/etcd.log"; then break; fi
    log "etcd: its port was taken meanwhile; trying other ports"
  done
  log "etcd did not become healthy; last lines of $WORK/etcd.log:"
  tail -n 20 "$WORK/etcd.log" >&2 || true
  etcd_pid=
  return 1
}

# etcd_counters: "proposals puts txns leases fsyncs fsync_seconds" from etcd's /metrics.
etcd_counters() {
  curl -fsS --max-time 5 "$etcd_url/metrics" 2>/dev/null | awk '
    $1 == "etcd_server_proposals_committed_total" { p = $2 }
    $1 == "etcd_mvcc_put_total" { u = $2 }
    $1 == "etcd_mvcc_txn_total" { t = $2 }
    $1 == "etcd_debugging_lease_granted_total" { l = $2 }
    $1 == "etcd_disk_wal_fsync_duration_seconds_count" { f = $2 }
    $1 == "etcd_disk_wal_fsync_duration_seconds_sum" { fs = $2 }
    END { printf "%d %d %d %d %d %.6f\n", p, u, t, l, f, fs }'
}

# etcd_db: "revision MB MB_in_use" of etcd's backend.
etcd_db() {
  local rev
  rev=$(curl -fsS --max-time 5 -X POST -d '{"key":"AA=="}' "$etcd_url/v3/kv/range" 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])' 2>/dev/null) || rev=n/a
  curl -fsS --max-time 5 "$etcd_url/metrics" 2>/dev/null | awk -v rev="$rev" '
    $1 == "etcd_mvcc_db_total_size_in_bytes" { t = $2 }
    $1 == "etcd_mvcc_db_total_size_in_use_in_bytes" { u = $2 }
    END { printf "%s %.0f %.0f\n", rev, t / 1048576, u / 1048576 }'
}

# etcd_compact: compacts etcd's history to its current revision and defragments its backend, so
# each setup starts from the same small database (kubepbx does not compact: every registration
# keeps a revision of its key until something does).
etcd_compact() {
  local -a db
  read -r -a db <<<"$(etcd_db)"
  [ "${db[0]}" != n/a ] || return 1
  curl -fsS --max-time 120 -X POST -d "{\"revision\":\"${db[0]}\",\"physical\":true}" "$etcd_url/v3/kv/compaction" >/dev/null &&
    curl -fsS --max-time 300 -X POST -d '{}' "$etcd_url/v3/maintenance/defragment" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Registrars: start_registrars N PREFIX sets reg_pids, reg_sip, reg_http (one entry per replica).
reg_pids=()
reg_sip=()
reg_http=()

start_registrar() { # setup i prefix: starts replica r<i>, appends to the arrays
  local setup=$1 i=$2 prefix=$3 sip internal http pid try w logf
  logf=$WORK/setup-$setup-r$i.log
  for try in 1 2 3; do
    sip=$(free_port udp)
    internal=$(free_port udp)
    http=$(free_port tcp)
    [ "$sip" != "$internal" ] || continue
    # shellcheck disable=SC2086 # REGISTRAR_ARGS is split on spaces on purpose
    "$KUBEPBX_BIN" registrar --etcd "$etcd_url" --etcd-prefix "$prefix" --replica-id "r$i" \
      --sip "127.0.0.1:$sip" --internal "127.0.0.1:$internal" --http "127.0.0.1:$http" \
      --advertise 127.0.0.1 --domain "$DOMAIN" --admin-token "$ADMIN_TOKEN" \
      --digest-challenge md5 --ban-threshold 0 ${REGISTRAR_ARGS:-} \
      >"$logf" 2>&1 </dev/null &
    pid=$!
    pids+=("$pid")
    for ((w = 0; w < 600; w++)); do
      kill -0 "$pid" 2>/dev/null || break
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$http/readyz" 2>/dev/null; then
        reg_pids+=("$pid")
        reg_sip+=("$sip")
        reg_http+=("$http")
        log "registrar r$i: ready after $((w / 10)).$((w % 10)) s (SIP udp 127.0.0.1:$sip, HTTP 127.0.0.1:$http)"
        return 0
      fi
      sleep 0.1
    done
    forget_pid "$pid"
    if ! grep -qiE 'address already in use|cannot listen' "$logf"; then break; fi
    log "registrar r$i: its port was taken meanwhile; trying other ports"
  done
  log "registrar r$i did not become ready; last lines of $logf:"
  tail -n 30 "$logf" >&2 || true
  return 1
}

start_registrars() { # setup count prefix
  local i
  reg_pids=()
  reg_sip=()
  reg_http=()
  for ((i = 0; i < $2; i++)); do
    start_registrar "$1" "$i" "$3" || return 1
  done
}

stop_registrars() {
  [ ${#reg_pids[@]} -eq 0 ] || stop_pids "${reg_pids[@]}"
  reg_pids=()
}

registrars_alive() {
  local p
  for p in "${reg_pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}

gauge() { # name http_port: a gauge of kubepbx's /metrics summed over label sets; n/a when absent
  curl -fsS --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$2/metrics" 2>/dev/null |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $2; found = 1 } END { if (found) printf "%d\n", s; else print "n/a" }'
}

# listed http_port: "total r0=… r1=…" from GET /api/v1/registrations (bindings by owning replica).
listed() {
  curl -fsS --max-time 30 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$1/api/v1/registrations" 2>/dev/null |
    python3 -c '
import collections, json, sys
b = json.load(sys.stdin)
c = collections.Counter(x.get("replica", "?") for x in b)
print(len(b), " ".join("%s=%d" % kv for kv in sorted(c.items())))
' 2>/dev/null || echo "n/a"
}

# ---------------------------------------------------------------------------------------------
# Throughput steps.
declare -A best_rate=() best_reg_us=() best_etcd_us=() best_writes=() create_writes=() top=()
declare -A prop_idle=() prop_loaded=() p99_idle=() p99_loaded=() agree=()

row() { printf '%-7s %6s %6s %6s %6s %5s %7s %6s %7s %6s %7s %5s %5s %5s %6s %9s %8s %8s %6s %9s  %s\n' "$@"; }
TABLE_HEADER=$(row step rate/s calls ok failed fail% retrans got/s resp_ms reg_us etcd_us reg% etcd% sipp% other% props/reg puts/reg txns/reg leases drops verdict)

# step SETUP KIND RATE CALLS CSV_PREFIX SERVER_PORT:LOCAL_PORT...: one step; prints its row (and
# appends it to $RESULTS); sets step_reg_us, step_etcd_us, step_writes ("props puts txns" per
# registration); returns 0 when clean, 1 when not.
step_reg_us=n/a
step_etcd_us=n/a
step_writes="n/a n/a n/a"
# shellcheck disable=SC2317 # called through ramp (lib.sh)
step() {
  local setup=$1 kind=$2 rate=$3 calls=$4 csv=$5
  shift 5
  local -a pairs=("$@") lports=() j0 j1 e0 e1
  local name p c0 c1 c2 t0 t1 t2 s0 s1 m0 m1 d0 d1 sd0 sd1 verdict
  local out ok failed retrans elapsed resp got reg_us etcd_us fail_pct reg_pct etcd_pct sipp_pct other_pct props puts txns
  for p in "${pairs[@]}"; do lports+=("${p##*:}"); done
  name="$setup-$kind-$rate"
  read -r -a e0 <<<"$(etcd_counters)"
  c0=$(cpu_ticks "${reg_pids[@]}")
  t0=$(cpu_ticks "$etcd_pid")
  read -r -a j0 <<<"$(machine_jiffies)"
  children_cpu
  s0=$children_ms
  d0=$(sum_drops "${reg_sip[@]}")
  sd0=$(sum_drops "${lports[@]}")
  m0=$(date +%s%N)
  reg_load "$name" "$calls" "$rate" "$csv" "${pairs[@]}"
  m1=$(date +%s%N)
  children_cpu
  s1=$children_ms
  read -r -a j1 <<<"$(machine_jiffies)"
  c1=$(cpu_ticks "${reg_pids[@]}")
  t1=$(cpu_ticks "$etcd_pid")
  d1=$(sum_drops "${reg_sip[@]}")
  sd1=$(sum_drops "${lports[@]}")
  # The registrars batch their writes: let the last batches of the step reach etcd.
  sleep "$ETCD_SETTLE"
  c2=$(cpu_ticks "${reg_pids[@]}")
  t2=$(cpu_ticks "$etcd_pid")
  read -r -a e1 <<<"$(etcd_counters)"
  case $load_rc in
    0 | 1) ;;
    *) die "sipp failed at step $name (exit $load_rc), not a verdict on the registrars" ;;
  esac
  read -r out ok failed retrans elapsed resp < <(python3 "$stat_py" "$WORK/sipp-$name".*.stat.csv) ||
    die "no statistics in $WORK/sipp-$name.*.stat.csv"
  # Per successful registration: CPU of the registrars and of etcd (step and settle time), etcd
  # proposals, keys put, transactions. Shares over the step's wall time, in % of one core.
  read -r got reg_us etcd_us fail_pct reg_pct etcd_pct sipp_pct other_pct props puts txns < <(python3 -c '
import sys
out, elapsed = int(sys.argv[1]), float(sys.argv[2])
(ok, failed, calls, reg_step, reg_all, etcd_step, etcd_all, clk, sipp_ms, wall_ns, jb, jt, ncpu,
 props, puts, txns) = map(int, sys.argv[3:])
wall = max(wall_ns / 1e9, 1e-9)
reg, etcd, sipp = reg_step / clk / wall * 100, etcd_step / clk / wall * 100, sipp_ms / 1000 / wall * 100
busy = jb * 100 / max(jt, 1) * ncpu
per = lambda v, f: (f % (v / ok)) if ok else "n/a"
print(round(out / elapsed) if elapsed > 0 else 0,
      per(reg_all * 1e6 / clk, "%.1f"), per(etcd_all * 1e6 / clk, "%.1f"),
      "%.2f" % (failed * 100 / calls),
      "%.0f" % reg, "%.0f" % etcd, "%.0f" % sipp, "%.0f" % max(busy - reg - etcd - sipp, 0),
      per(props, "%.3f"), per(puts, "%.3f"), per(txns, "%.3f"))
' "$out" "$elapsed" "$ok" "$failed" "$calls" "$((c1 - c0))" "$((c2 - c0))" "$((t1 - t0))" "$((t2 - t0))" \
    "$CLK_TCK" "$((s1 - s0))" "$((m1 - m0))" "$((j1[0] - j0[0]))" "$((j1[1] - j0[1]))" "$NCPU" \
    "$((e1[0] - e0[0]))" "$((e1[1] - e0[1]))" "$((e1[2] - e0[2]))")
  verdict=clean
  if ! registrars_alive; then
    verdict="registrar exited"
  elif ! kill -0 "$etcd_pid" 2>/dev/null; then
    verdict="etcd exited"
  elif [ $((failed * 1000)) -gt "$calls" ]; then
    verdict="failed > 0.1%"
  elif [ $((got * 100)) -lt $((rate * MIN_ACHIEVED_PCT)) ]; then
    verdict="rate < ${MIN_ACHIEVED_PCT}%"
  fi
  step_noisy=0
  if [ "$other_pct" -gt "$NOISE_PCT" ]; then
    step_noisy=1
    verdict="$verdict; other load on the machine"
  fi
  row "$kind" "$rate" "$calls" "$ok" "$failed" "$fail_pct" "$retrans" "$got" "$resp" "$reg_us" "$etcd_us" \
    "$reg_pct" "$etcd_pct" "$sipp_pct" "$other_pct" "$props" "$puts" "$txns" "$((e1[3] - e0[3]))" \
    "$((d1 - d0))/$((sd1 - sd0))" "$verdict" | tee -a "$RESULTS"
  step_reg_us=$reg_us
  step_etcd_us=$etcd_us
  step_writes="$props $puts $txns"
  # Let queues and retransmissions of an overloaded step drain before the next one.
  if [ "$verdict" = clean ]; then sleep 1; else sleep 3; fi
  [[ $verdict == clean* ]]
}

# Callbacks of ramp (lib.sh), run inside setup_run: its n, csv and pairs.
# shellcheck disable=SC2317
refresh_step() {
  local calls=$(($1 * STEP_SECONDS))
  [ "$calls" -ge "$MIN_STEP_CALLS" ] || calls=$MIN_STEP_CALLS
  step "$n" refresh "$1" "$calls" "$csv" "${pairs[@]}"
}
# shellcheck disable=SC2317
refresh_clean() {
  best_rate[$n]=$1
  best_reg_us[$n]=$step_reg_us
  best_etcd_us[$n]=$step_etcd_us
  best_writes[$n]=$step_writes
}

# ---------------------------------------------------------------------------------------------
# Propagation: propagate SETUP LABEL FIRST_USER; sets prop_line (p50 … max) and prop_p99.
prop_line=
prop_p99=
propagate() {
  local setup=$1 label=$2 first=$3 out sips https p rc=0
  out=$WORK/propagation-$setup-$label
  sips=$(for p in "${reg_sip[@]}"; do printf '127.0.0.1:%s,' "$p"; done)
  https=$(for p in "${reg_http[@]}"; do printf '127.0.0.1:%s,' "$p"; done)
  python3 "$prop_py" --sip "${sips%,}" --http "${https%,}" --token "$ADMIN_TOKEN" --domain "$DOMAIN" \
    --first "$first" --samples "$SAMPLES" --timeout "$PROP_TIMEOUT" --csv "$out.csv" \
    >"$out.out" 2>"$out.err" || rc=$?
  sed 's/^/  /' "$out.out" | grep -v '^  RESULT ' | tee -a "$RESULTS"
  if [ "$rc" -ne 0 ] || ! grep -q '^RESULT ' "$out.out"; then
    {
      echo "  propagation.py exited $rc; last lines of $out.err:"
      tail -n 5 "$out.err" | sed 's/^/    /'
    } | tee -a "$RESULTS"
    return 1
  fi
  declare -A r=()
  local kv
  local -a kvs
  read -r -a kvs < <(sed -n 's/^RESULT //p' "$out.out")
  for kv in "${kvs[@]}"; do r[${kv%%=*}]=${kv#*=}; done
  prop_line="p50 ${r[p50_ms]} ms, p90 ${r[p90_ms]} ms, p99 ${r[p99_ms]} ms, max ${r[max_ms]} ms (${r[seen]}/${r[samples]} listed; poll round trip p50 ${r[poll_rtt_p50_ms]} ms)"
  prop_p99=${r[p99_ms]}
}

# ---------------------------------------------------------------------------------------------
# One setup: N registrars on a fresh prefix.
declare -A measured=() problems=() prop_failed=()

setup_run() {
  local n=$1 prefix=/bench-$1 inst i csv rate idle_first loaded_first expected lines f p
  local out ok failed retrans elapsed resp
  local -a pairs=() counts=() gauges=() e0 e1 db
  inst=${SIPP_INSTANCES:-$(($1 == 1 ? 2 : $1))}
  [ "$USERS" -ge "$inst" ] || die "need USERS >= sipp instances ($inst)"
  etcd_compact || log "setup $n: compacting etcd failed (the setup runs on an uncompacted etcd)"
  read -r -a db <<<"$(etcd_db)"
  log "setup $n: etcd at revision ${db[0]}, backend ${db[1]} MB (${db[2]} MB in use)"
  log "setup $n: kubepbx apply of $((USERS + 2 * SAMPLES)) extensions under $prefix"
  if ! "$KUBEPBX_BIN" apply -f "$WORK/manifests" --etcd "$etcd_url" --etcd-prefix "$prefix" \
    --domain "$DOMAIN" >"$WORK/setup-$n-apply.log" 2>&1 </dev/null; then
    log "setup $n: kubepbx apply failed; last lines of $WORK/setup-$n-apply.log:"
    tail -n 10 "$WORK/setup-$n-apply.log" >&2 || true
    return 1
  fi
  start_registrars "$n" "$n" "$prefix" || {
    stop_registrars
    return 1
  }
  # Fixed local ports, so each user always has the same Contact; instance i -> replica i mod N.
  for ((i = 0; i < inst; i++)); do pairs+=("${reg_sip[$((i % n))]}:$(free_port udp)"); done
  csv=$(users_csv "$USERS" "$inst")
  for ((i = 0; i < inst; i++)); do # the first user of each instance, through its replica
    if ! reg_smoke "setup-$n-sipp$i" "${pairs[$i]%%:*}" "${pairs[$i]##*:}" "$((FIRST_USER + i * (USERS / inst)))"; then
      stop_registrars
      return 1
    fi
  done
  # etcd's own traffic with the registrars idle (registry leases and the like).
  read -r -a e0 <<<"$(etcd_counters)"
  sleep 3
  read -r -a e1 <<<"$(etcd_counters)"
  measured[$n]=1
  best_rate[$n]=0
  top[$n]=1
  {
    echo
    echo "== $n registrar replica$([ "$n" = 1 ] || echo s) sharing etcd (prefix $prefix): $USERS users over $inst sipp instances (instance i -> replica i mod $n),"
    echo "   register_digest.xml over UDP; create: each user once at $CREATE_RATE/s; refresh steps of max($MIN_STEP_CALLS, rate x ${STEP_SECONDS}s) calls"
    echo "   etcd with the registrars idle: $((e1[0] - e0[0])) proposals and $((e1[1] - e0[1])) puts in 3 s"
    echo "$TABLE_HEADER"
  } | tee -a "$RESULTS"
  read -r -a e0 <<<"$(etcd_counters)"
  # Not repeated when noisy: a second run would refresh the bindings the first one created.
  step "$n" create "$CREATE_RATE" "$USERS" "$csv" "${pairs[@]}" || problems[$n]+="the create step was not clean; "
  [ "$step_noisy" = 0 ] || problems[$n]+="other load on the machine during the create step; "
  create_writes[$n]=$step_writes
  if registrars_alive; then
    # shellcheck disable=SC2086 # RATES is a list
    ramp refresh_step refresh_clean registrars_alive 500 $RATES
    top[$n]=$ramp_top
  fi
  if ! registrars_alive || ! kill -0 "$etcd_pid" 2>/dev/null; then
    for ((i = 0; i < n; i++)); do
      kill -0 "${reg_pids[$i]}" 2>/dev/null || {
        log "registrar r$i exited; last lines of $WORK/setup-$n-r$i.log:"
        tail -n 30 "$WORK/setup-$n-r$i.log" >&2 || true
      }
    done
    kill -0 "$etcd_pid" 2>/dev/null || log "etcd exited; see $WORK/etcd.log"
    stop_registrars
    return 1
  fi

  expected=$USERS
  if [ "$n" -ge 2 ]; then
    idle_first=$((FIRST_USER + USERS))
    loaded_first=$((idle_first + SAMPLES))
    echo "propagation, idle cluster: $SAMPLES registrations, each polled for on another replica" | tee -a "$RESULTS"
    if propagate "$n" idle "$idle_first"; then
      prop_idle[$n]=$prop_line
      p99_idle[$n]=$prop_p99
    else
      problems[$n]+="the idle propagation test failed; "
      prop_failed[$n]=1
    fi
    rate=$((best_rate[$n] * PROP_LOAD_PCT / 100 / 100 * 100))
    if [ "$rate" -ge 100 ]; then
      echo "propagation under load: sipp refreshing at $rate/s ($PROP_LOAD_PCT % of $((best_rate[$n]))/s) for ${PROP_LOAD_SECONDS} s, samples from 2 s in" | tee -a "$RESULTS"
      reg_load_start "$n-propload" "$((rate * PROP_LOAD_SECONDS))" "$rate" "$csv" "${pairs[@]}"
      sleep 2
      if propagate "$n" loaded "$loaded_first"; then
        prop_loaded[$n]=$prop_line
        p99_loaded[$n]=$prop_p99
      else
        problems[$n]+="the propagation test under load failed; "
        prop_failed[$n]=1
      fi
      for p in "${load_pids[@]}"; do
        kill -0 "$p" 2>/dev/null || {
          echo "  note: the load ended before the last sample; raise PROP_LOAD_SECONDS" | tee -a "$RESULTS"
          break
        }
      done
      reg_load_wait
      read -r out ok failed retrans elapsed resp < <(python3 "$stat_py" "$WORK/sipp-$n-propload".*.stat.csv) || true
      echo "  the load: ${ok:-?} ok, ${failed:-?} failed, ${retrans:-?} retransmissions in ${elapsed:-?} s (sipp exit $load_rc)" | tee -a "$RESULTS"
    else
      echo "propagation under load: not measured (no clean refresh rate)" | tee -a "$RESULTS"
      problems[$n]+="no load for the propagation test; "
    fi
    expected=$((USERS + 2 * SAMPLES))
  fi

  # Every registrar must list the same bindings (etcd's watch may lag a moment behind).
  for ((i = 0; i < 20; i++)); do
    gauges=()
    for ((f = 0; f < n; f++)); do gauges+=("$(gauge kubepbx_registrations "${reg_http[$f]}")"); done
    [ "$(printf '%s\n' "${gauges[@]}" | sort -u)" != "$expected" ] || break
    sleep 0.5
  done
  counts=()
  for ((f = 0; f < n; f++)); do counts+=("$(listed "${reg_http[$f]}")"); done
  {
    echo "bindings listed by each registrar (GET /api/v1/registrations: total, then by owning replica; kubepbx_registrations), registered: $expected"
    for ((f = 0; f < n; f++)); do echo "  r$f: ${counts[$f]}; gauge ${gauges[$f]}"; done
  } | tee -a "$RESULTS"
  if [ "$(printf '%s\n' "${counts[@]%% *}" "${gauges[@]}" | sort -u)" = "$expected" ]; then
    agree[$n]="every registrar lists $expected bindings"
  else
    agree[$n]="registrars DISAGREE: listed ${counts[*]%% *}, gauges ${gauges[*]}, registered $expected"
    problems[$n]+="the registrars disagree on the bindings; "
  fi
  for ((f = 0; f < n; f++)); do
    lines=$(grep -cE 'WARN|ERROR|panic' "$WORK/setup-$n-r$f.log" || true)
    echo "r$f: log lines $(wc -l <"$WORK/setup-$n-r$f.log"), matching WARN|ERROR|panic: $lines" | tee -a "$RESULTS"
    if [ "$lines" != 0 ]; then
      grep -E 'WARN|ERROR|panic' "$WORK/setup-$n-r$f.log" |
        sed -E 's/^[0-9T:.Z-]+ +//; s/[0-9]+(\.[0-9]+)*/N/g' | sort | uniq -c | sort -rn | head -n 5 |
        sed 's/^/  /' | tee -a "$RESULTS" || true
    fi
  done
  read -r -a e1 <<<"$(etcd_counters)"
  python3 -c '
import sys
f0, s0, f1, s1 = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
n = f1 - f0
print("etcd during this setup: %d WAL fsyncs, mean %.2f ms" % (n, (s1 - s0) * 1000 / n if n else 0))
' "${e0[4]}" "${e0[5]}" "${e1[4]}" "${e1[5]}" | tee -a "$RESULTS"
  read -r -a db <<<"$(etcd_db)"
  echo "etcd after this setup: revision ${db[0]}, backend ${db[1]} MB (${db[2]} MB in use: every key written keeps its old versions until etcd is compacted, which it was not during the setup)" | tee -a "$RESULTS"
  stop_registrars
}

# ---------------------------------------------------------------------------------------------
{
  echo "kubepbx registrar replicas sharing etcd, registration benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "sipp: $(sipp -v 2>&1 | awk '/SIPp/ { print $2; exit }'), socket buffers $SIPP_BUFF"
  echo "etcd: $("$ETCD_BIN" --version 2>/dev/null | awk '/etcd Version/ { print $3; exit }'), one member, data on $(df -T "$WORK" | awk 'NR == 2 { print $2 }') ($WORK/etcd-data)${ETCD_ARGS:+, extra args: $ETCD_ARGS}"
  echo "kubepbx: $KUBEPBX_BIN ($("$KUBEPBX_BIN" --version 2>/dev/null || echo "version unknown")), RUST_LOG=${RUST_LOG:-unset (info)}${REGISTRAR_ARGS:+, extra args: $REGISTRAR_ARGS}"
  machine_lines
  echo "columns: step = create (each user's first registration: new bindings) or refresh (the same users"
  echo "  again, same Contact); got/s = calls sipp made per second; resp_ms = mean REGISTER->200 time;"
  echo "  reg_us, etcd_us = CPU us per successful registration of all registrars together and of etcd"
  echo "  (${ETCD_SETTLE} s after the step included); reg%, etcd%, sipp%, other% = CPU during the step in % of one"
  echo "  core (other = everything else on the machine); props/reg = etcd raft proposals committed,"
  echo "  puts/reg = keys written, txns/reg = multi-operation transactions, per successful registration;"
  echo "  leases = leases etcd granted during the step; drops = datagrams the kernel dropped at the"
  echo "  registrars' / sipp's sockets"
} | tee -a "$RESULTS"

python3 "$gen_manifests" "$((USERS + 2 * SAMPLES))" --first "$FIRST_USER" -o "$WORK/manifests"
start_etcd || {
  echo "etcd did not start: nothing measured (see $WORK/etcd.log)" | tee -a "$RESULTS"
  status=1
  exit 1
}

failed_setups=()
for n in $SETUPS; do
  setup_run "$n" || failed_setups+=("$n")
done

met() { if [ "$1" = 1 ]; then echo met; else echo "NOT met"; fi; }
p99_ok() { python3 -c 'import sys; v = sys.argv[1]; print(1 if v[:1] not in (">", "n") and float(v) < float(sys.argv[2]) else 0)' "$1" "$2"; }
{
  echo
  echo "== summary"
  for n in $SETUPS; do
    if [ -z "${measured[$n]:-}" ]; then
      echo "$n replica(s): not measured"
      continue
    fi
    read -r cp cu ct <<<"${create_writes[$n]}"
    read -r rp ru rt <<<"${best_writes[$n]:-n/a n/a n/a}"
    echo "$n replica(s): highest clean rate ${best_rate[$n]}/s$([ "${top[$n]}" = 0 ] || echo " (every step was clean: a lower bound, raise RATES)"), CPU per registration at that rate: registrars ${best_reg_us[$n]:-n/a} us, etcd ${best_etcd_us[$n]:-n/a} us"
    echo "  etcd per registration: create $cp proposals, $cu puts, $ct txns; refresh (at the highest clean rate) $rp proposals, $ru puts, $rt txns"
    [ "$n" -lt 2 ] || echo "  propagation idle: ${prop_idle[$n]:-not measured}"
    [ "$n" -lt 2 ] || echo "  propagation under load: ${prop_loaded[$n]:-not measured}"
    echo "  ${agree[$n]:-bindings not compared}"
    [ -z "${problems[$n]:-}" ] || echo "  problems: ${problems[$n]%; }"
  done
  if [ -n "${measured[3]:-}" ]; then
    echo "target: >= $TARGET_RATE clean registrations/s with 3 replicas and etcd: ${best_rate[3]}/s — $(met "$([ "${best_rate[3]}" -ge "$TARGET_RATE" ] && echo 1)")"
    echo "target: propagation p99 < $TARGET_P99_MS ms (3 replicas): idle ${p99_idle[3]:-n/a} ms — $(met "$(p99_ok "${p99_idle[3]:-n/a}" "$TARGET_P99_MS")"), under load ${p99_loaded[3]:-n/a} ms — $(met "$(p99_ok "${p99_loaded[3]:-n/a}" "$TARGET_P99_MS")")"
  else
    echo "targets (3 replicas: >= $TARGET_RATE/s, propagation p99 < $TARGET_P99_MS ms): not measured (SETUPS=$SETUPS)"
  fi
  if [ ${#failed_setups[@]} -gt 0 ]; then
    echo "not measured: setup(s) ${failed_setups[*]} (see the log lines above and $WORK)"
  fi
} | tee -a "$RESULTS"

status=0
[ ${#failed_setups[@]} -eq 0 ] || status=1
for n in $SETUPS; do
  [ -z "${prop_failed[$n]:-}" ] || status=1
done
exit "$status"
