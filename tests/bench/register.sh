#!/usr/bin/env bash
# Registration benchmark: kubepbx (and Kamailio 5.6 as the peer, when installed) under sipp.
#
#   KUBEPBX_BIN=$CARGO_TARGET_DIR/release/kubepbx tests/bench/register.sh     (what `make bench` runs)
#   TARGETS=kamailio tests/bench/register.sh                                  (the peer alone)
#
# For each target, on 127.0.0.1 only:
#   1. throughput: sipp runs tests/sipp/register_digest.xml over UDP (one call = REGISTER → 401 →
#      REGISTER with an MD5/qop=auth digest → 200) for USERS distinct users, reused cyclically,
#      at each rate of RATES in turn (max(MIN_STEP_CALLS, rate × STEP_SECONDS) calls per step),
#      until a step is not clean: more than 0.1 % of its calls failed, or sipp achieved less than
#      MIN_ACHIEVED_PCT % of the target rate (the registrar answers too slowly, so retransmissions
#      and queueing hold sipp back). REFINE_STEPS more steps then bisect between the last clean
#      and the first failed rate. The highest clean rate is reported with the server's CPU time
#      per successful registration in that step (utime+stime of the server and its child
#      processes, /proc/PID/stat, before and after the step). The load comes from SIPP_INSTANCES
#      sipp processes in parallel, each with its own share of the users, calls and rate: one
#      sipp (single-threaded) held Kamailio to 28,500 registrations/s on 2 cores, where two
#      reached 36,000/s (docs/benchmarks.md).
#   2. memory: a fresh instance holding MEM_BINDINGS extensions gets MEM_BINDINGS registrations
#      (one binding per user, Expires 3600) at MEM_RATE/s, then MEM_ROUNDS-1 more rounds that
#      refresh the same bindings. kubepbx: VmRSS with zero bindings and after each round,
#      (difference) / bindings = bytes per binding; the binding count is checked against the
#      kubepbx_registrations gauge of /metrics. Kamailio (several processes sharing memory): the
#      sum of Pss over its processes, same arithmetic.
# Then the tables, the ratio of highest clean rates and the memory figures are printed (and
# written to $WORK/results.txt). The targets from the issue (≥ 1.5 × Kamailio's clean rate,
# ≤ 1 KiB per binding at 100,000 bindings) are reported, not asserted: the exit status is 0 when
# every requested target was measured, 1 when one could not be (did not start, failed the
# one-registration smoke test, crashed), 2 for errors of this script or its environment.
#
# Environment (defaults in brackets):
#   KUBEPBX_BIN        the kubepbx binary (required when TARGETS has kubepbx)
#   TARGETS            [kubepbx kamailio] — kamailio is skipped with a note when not installed
#   RATES              [2000 4000 6000 8000 10000 13000 16000 20000 25000 30000 35000 40000]
#   USERS              [10000]  distinct users of the throughput test (extensions 1001…)
#   STEP_SECONDS       [3]      MIN_STEP_CALLS [10000]   MIN_ACHIEVED_PCT [95]
#   REFINE_STEPS       [2]      SIPP_INSTANCES [2]
#   NOISE_PCT          [25]     a step during which other processes used more than this % of a
#                               core is marked and run again (at most twice)
#   MEM_BINDINGS       [100000] (0 skips the memory test)   MEM_RATE [5000]
#   MEM_SETTLE         [45]     seconds to wait at most after a round for kubepbx's server
#                               transactions to end (Timer J, 32 s) before reading memory
#   MEM_ROUNDS         [2]      registration rounds of the memory test (1 creates the bindings,
#                               the others refresh them)
#   KUBEPBX_ARGS       []       more `kubepbx up` arguments (split on spaces). The script passes
#                               --digest-challenge md5 (sipp answers only the first challenge and
#                               knows only MD5; Kamailio offers MD5 alone too) and
#                               --ban-threshold 0 (all the load comes from 127.0.0.1: a failed
#                               step must not ban the load generator for the next one)
#   KAMAILIO_CHILDREN  [nproc]  UDP worker processes of Kamailio (-n); on 2 cores 2 sustained
#                               more than 4 or 8 (37,500/s against 35,000/s and 28,500/s)
#   SIPP_BUFF          [4194304] sipp's socket buffers (-buff_size; the kernel caps it at
#                               net.core.rmem_max / wmem_max)
#   BENCH_WORK         [a new /tmp/kubepbx-bench.XXXXXX]  logs, stat files, manifests; a
#                               directory given here is kept, the default one is deleted after
#                               a successful run unless BENCH_KEEP=1
#
# Needs sipp (sip-tester), python3, curl; kamailio for the comparison
# (scripts/install-deps.sh bench installs them). Helpers shared with the other benchmarks are in
# tests/bench/lib.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
stat_py=$here/sipp_stat.py
kamailio_cfg=$here/kamailio.cfg

TARGETS=${TARGETS:-kubepbx kamailio}
RATES=${RATES:-2000 4000 6000 8000 10000 13000 16000 20000 25000 30000 35000 40000}
USERS=${USERS:-10000}
STEP_SECONDS=${STEP_SECONDS:-3}
MIN_STEP_CALLS=${MIN_STEP_CALLS:-10000}
MIN_ACHIEVED_PCT=${MIN_ACHIEVED_PCT:-95}
MEM_BINDINGS=${MEM_BINDINGS:-100000}
MEM_RATE=${MEM_RATE:-5000}
MEM_ROUNDS=${MEM_ROUNDS:-2}
MEM_SETTLE=${MEM_SETTLE:-45}
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-$(nproc)}
SIPP_INSTANCES=${SIPP_INSTANCES:-2}
REFINE_STEPS=${REFINE_STEPS:-2}
NOISE_PCT=${NOISE_PCT:-25}
SIPP_BUFF=${SIPP_BUFF:-4194304}
BENCH_KEEP=${BENCH_KEEP:-0}
DOMAIN=pbx.example.com
FIRST_USER=1001
ADMIN_TOKEN=bench

for cmd in sipp python3 curl getconf; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (scripts/install-deps.sh bench installs the tools)"
done
for n in "$USERS" "$STEP_SECONDS" "$MIN_STEP_CALLS" "$MIN_ACHIEVED_PCT" "$MEM_BINDINGS" "$MEM_RATE" "$MEM_ROUNDS" "$KAMAILIO_CHILDREN" "$SIPP_BUFF" "$SIPP_INSTANCES" "$REFINE_STEPS" "$NOISE_PCT"; do
  [[ $n =~ ^[0-9]+$ ]] || die "not a number: $n"
done
for r in $RATES; do
  [[ $r =~ ^[1-9][0-9]*$ ]] || die "RATES: not a positive number: $r"
done
[ "$MEM_ROUNDS" -ge 1 ] || die "MEM_ROUNDS must be at least 1 (MEM_BINDINGS=0 skips the memory test)"
if [ "$SIPP_INSTANCES" -lt 1 ] || [ "$USERS" -lt "$SIPP_INSTANCES" ]; then
  die "need SIPP_INSTANCES >= 1 and USERS >= SIPP_INSTANCES"
fi
init_work kubepbx-bench results.txt

# ---------------------------------------------------------------------------------------------
# Memory from /proc.

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }

# Sum of Pss (KiB) over pid and its children: shared memory counted once.
pss_kib() {
  local pid=$1 p total=0 v
  for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
    v=$(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------------------------
# Targets: start_target TARGET PREFIX EXTENSIONS sets srv_pid, srv_port (and http_port for kubepbx).

start_kubepbx() {
  local prefix=$1 count=$2 manifests=$WORK/manifests-$2 i
  if [ ! -d "$manifests" ]; then
    python3 "$gen_manifests" "$count" --first "$FIRST_USER" -o "$manifests"
  fi
  srv_port=$(free_port udp)
  http_port=$(free_port tcp)
  rm -rf "$WORK/$prefix-data"
  log "kubepbx: starting with $count extensions (SIP udp 127.0.0.1:$srv_port, HTTP 127.0.0.1:$http_port)"
  "$KUBEPBX_BIN" up -f "$manifests" --sip "127.0.0.1:$srv_port" --http "127.0.0.1:$http_port" \
    --advertise 127.0.0.1 --domain "$DOMAIN" --data-dir "$WORK/$prefix-data" \
    --admin-token "$ADMIN_TOKEN" --digest-challenge md5 --ban-threshold 0 \
    ${KUBEPBX_ARGS:+$KUBEPBX_ARGS} >"$WORK/$prefix.log" 2>&1 </dev/null &
  srv_pid=$!
  pids+=("$srv_pid")
  for ((i = 0; i < 1800; i++)); do
    if ! kill -0 "$srv_pid" 2>/dev/null; then
      log "kubepbx exited during startup; last lines of $WORK/$prefix.log:"
      tail -n 30 "$WORK/$prefix.log" >&2 || true
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$http_port/readyz" 2>/dev/null; then
      log "kubepbx: ready after $((i / 10)).$((i % 10)) s"
      return 0
    fi
    sleep 0.1
  done
  log "kubepbx: not ready after 180 s; last lines of $WORK/$prefix.log:"
  tail -n 30 "$WORK/$prefix.log" >&2 || true
  return 1
}

start_kamailio() {
  local prefix=$1 i
  srv_port=$(free_port udp)
  http_port=
  mkdir -p "$WORK/$prefix-run"
  log "kamailio: starting, $KAMAILIO_CHILDREN UDP workers (udp 127.0.0.1:$srv_port)"
  # -b: let Kamailio raise its receive buffer as far as the kernel allows, like sipp's.
  kamailio -f "$kamailio_cfg" -l "udp:127.0.0.1:$srv_port" -n "$KAMAILIO_CHILDREN" \
    -b "$SIPP_BUFF" -m 256 -M 8 -DD -E -Y "$WORK/$prefix-run" -w "$WORK/$prefix-run" \
    >"$WORK/$prefix.log" 2>&1 </dev/null &
  srv_pid=$!
  pids+=("$srv_pid")
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$srv_pid" 2>/dev/null; then
      log "kamailio exited during startup; last lines of $WORK/$prefix.log:"
      tail -n 30 "$WORK/$prefix.log" >&2 || true
      return 1
    fi
    if [ "$(pgrep -c -P "$srv_pid" || true)" -ge "$KAMAILIO_CHILDREN" ] &&
      awk -v a="$(printf '0100007F:%04X' "$srv_port")" '$2 == a { f = 1 } END { exit !f }' /proc/net/udp; then
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
  log "kamailio: not listening after 10 s"
  return 1
}

start_target() { # target prefix extensions
  case $1 in
    kubepbx) start_kubepbx "$2" "$3" ;;
    kamailio) start_kamailio "$2" ;;
    *) die "unknown target $1" ;;
  esac
}

registrations_gauge() { # kubepbx_registrations from /metrics (sum over label sets)
  gauge kubepbx_registrations
}
gauge() { # a gauge of kubepbx's /metrics, summed over label sets; n/a when absent
  curl -fsS --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$http_port/metrics" 2>/dev/null |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $2; found = 1 } END { if (found) printf "%d\n", s; else print "n/a" }'
}

# ---------------------------------------------------------------------------------------------
# Throughput: step the rate. Appends the table to $RESULTS and sets best_rate[target],
# best_us[target].
declare -A best_rate=() best_us=() measured=() mem_per=() mem_heap=() top=()

row() { printf '%-8s %7s %7s %7s %6s %6s %8s %7s %8s %7s %8s %6s %6s %10s  %s\n' "$@"; }
TABLE_HEADER=$(row target rate/s calls ok failed fail% retrans got/s resp_ms srv_us srv_cpu% sipp% other% drops verdict)

# step TARGET RATE CSV_PREFIX LOCAL_PORT...: one step against the running server ($srv_pid,
# $srv_port); prints its row (and appends it to $RESULTS); sets step_us (server CPU us per
# successful registration); returns 0 when clean, 1 when not.
step_us=n/a
# shellcheck disable=SC2317 # called through ramp (lib.sh)
step() {
  local target=$1 rate=$2 csv=$3
  shift 3
  local -a lports=("$@") j0 j1
  local calls name c0 c1 s0 s1 m0 m1 d0 d1 sd0 sd1 verdict
  local out ok failed retrans elapsed got resp us srv_pct sipp_pct other_pct fail_pct
  calls=$((rate * STEP_SECONDS))
  [ "$calls" -ge "$MIN_STEP_CALLS" ] || calls=$MIN_STEP_CALLS
  name="$target-$rate"
  c0=$(cpu_ticks "$srv_pid")
  read -r -a j0 <<<"$(machine_jiffies)"
  children_cpu
  s0=$children_ms
  d0=$(udp_drops "$srv_port")
  sd0=$(sum_drops "${lports[@]}")
  m0=$(date +%s%N)
  reg_load "$name" "$calls" "$rate" "$csv" "${lports[@]/#/$srv_port:}"
  m1=$(date +%s%N)
  children_cpu
  s1=$children_ms
  read -r -a j1 <<<"$(machine_jiffies)"
  c1=$(cpu_ticks "$srv_pid")
  d1=$(udp_drops "$srv_port")
  sd1=$(sum_drops "${lports[@]}")
  case $load_rc in
    0 | 1) ;;
    *) die "sipp failed at step $name (exit $load_rc), not a verdict on $target" ;;
  esac
  read -r out ok failed retrans elapsed resp < <(python3 "$stat_py" "$WORK/sipp-$name".*.stat.csv) ||
    die "no statistics in $WORK/sipp-$name.*.stat.csv"
  # got/s: calls sipp made per second; us: server CPU per successful registration; CPU shares
  # over the step's wall time, in % of one core: server, sipp, the rest of the machine.
  read -r got us fail_pct srv_pct sipp_pct other_pct < <(python3 -c '
import sys
out, elapsed = int(sys.argv[1]), float(sys.argv[2])
ok, failed, calls, ticks, clk, sipp_ms, wall_ns, jb, jt, ncpu = map(int, sys.argv[3:])
wall = max(wall_ns / 1e9, 1e-9)
srv, sipp = ticks / clk / wall * 100, sipp_ms / 1000 / wall * 100
busy = jb * 100 / max(jt, 1) * ncpu
print(round(out / elapsed) if elapsed > 0 else 0,
      "%.1f" % (ticks * 1e6 / clk / ok) if ok else "n/a",
      "%.2f" % (failed * 100 / calls),
      "%.0f" % srv, "%.0f" % sipp, "%.0f" % max(busy - srv - sipp, 0))
' "$out" "$elapsed" "$ok" "$failed" "$calls" "$((c1 - c0))" "$CLK_TCK" "$((s1 - s0))" \
    "$((m1 - m0))" "$((j1[0] - j0[0]))" "$((j1[1] - j0[1]))" "$NCPU")
  verdict=clean
  if ! kill -0 "$srv_pid" 2>/dev/null; then
    verdict="server exited"
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
  row "$target" "$rate" "$calls" "$ok" "$failed" "$fail_pct" "$retrans" "$got" "$resp" \
    "$us" "$srv_pct" "$sipp_pct" "$other_pct" "$((d1 - d0))/$((sd1 - sd0))" "$verdict" |
    tee -a "$RESULTS"
  step_us=$us
  # Let queues and retransmissions of an overloaded step drain before the next one.
  if [ "$verdict" = clean ]; then sleep 1; else sleep 3; fi
  [[ $verdict == clean* ]]
}

# Callbacks of ramp (lib.sh), run inside throughput: its target, csv and lports.
# shellcheck disable=SC2317
tp_step() { step "$target" "$1" "$csv" "${lports[@]}"; }
# shellcheck disable=SC2317
tp_clean() {
  best_rate[$target]=$1
  best_us[$target]=$step_us
}
# shellcheck disable=SC2317
server_alive() { kill -0 "$srv_pid" 2>/dev/null; }

throughput() {
  local target=$1 csv i
  local -a lports=()
  start_target "$target" "$target-tp" "$USERS" || return 1
  # The same local ports for every step: the same Contact, so one binding per user.
  for ((i = 0; i < SIPP_INSTANCES; i++)); do lports+=("$(free_port udp)"); done
  reg_smoke "$target" "$srv_port" "${lports[0]}" || {
    forget_pid "$srv_pid"
    return 1
  }
  csv=$(users_csv "$USERS" "$SIPP_INSTANCES")
  measured[$target]=1
  best_rate[$target]=0
  best_us[$target]=n/a
  {
    echo
    echo "== $target: $USERS users over $SIPP_INSTANCES sipp instances, register_digest.xml over UDP,"
    echo "   steps of max($MIN_STEP_CALLS, rate x ${STEP_SECONDS}s) calls"
    echo "$TABLE_HEADER"
  } | tee -a "$RESULTS"
  # Each rate of RATES until one is not clean, then bisect (to multiples of 500/s).
  # shellcheck disable=SC2086 # RATES is a list
  ramp tp_step tp_clean server_alive 500 $RATES
  top[$target]=$ramp_top
  if ! kill -0 "$srv_pid" 2>/dev/null; then
    log "$target exited during the throughput test; last lines of $WORK/$target-tp.log:"
    tail -n 30 "$WORK/$target-tp.log" >&2 || true
    forget_pid "$srv_pid"
    return 1
  fi
  if [ "$target" = kubepbx ]; then
    echo "kubepbx: kubepbx_registrations after the steps: $(registrations_gauge) (one binding per user: $USERS)" | tee -a "$RESULTS"
    echo "kubepbx: log lines matching error|panic: $(grep -ciE 'error|panic' "$WORK/$target-tp.log" || true)" | tee -a "$RESULTS"
  fi
  forget_pid "$srv_pid"
}

# ---------------------------------------------------------------------------------------------
# Memory: bindings on a fresh instance (one sipp: MEM_RATE is moderate). Round 1 creates the
# MEM_BINDINGS bindings; rounds 2…MEM_ROUNDS refresh the same bindings (same users, same Contact),
# which must not need more memory.
mem_kib() { if [ "$1" = kubepbx ]; then rss_kib "$srv_pid"; else pss_kib "$srv_pid"; fi; }

memory() {
  local target=$1 lport before after gauge i out ok failed retrans elapsed resp unit per csv round
  local first_after=0
  [ "$MEM_BINDINGS" -gt 0 ] || return 0
  csv=$(users_csv "$MEM_BINDINGS" 1)
  start_target "$target" "$target-mem" "$MEM_BINDINGS" || return 1
  lport=$(free_port udp)
  sleep 2
  unit="VmRSS"
  [ "$target" = kubepbx ] || unit="Pss summed over its processes"
  before=$(mem_kib "$target")
  heap_before=n/a
  [ "$target" != kubepbx ] || heap_before=$(gauge kubepbx_heap_allocated_bytes)
  {
    echo
    echo "== $target memory: $MEM_BINDINGS extensions; $MEM_ROUNDS rounds of $MEM_BINDINGS registrations at $MEM_RATE/s"
    echo "   (Expires 3600; round 1 creates one binding per user, later rounds refresh them)"
    echo "$unit with $MEM_BINDINGS extensions and 0 bindings: $before KiB"
    [ "$heap_before" = n/a ] || echo "live heap (kubepbx_heap_allocated_bytes) with 0 bindings: $heap_before bytes"
  } | tee -a "$RESULTS"
  for ((round = 1; round <= MEM_ROUNDS; round++)); do
    log "$target: memory round $round: registering $MEM_BINDINGS users at $MEM_RATE/s"
    reg_load "$target-mem-$round" "$MEM_BINDINGS" "$MEM_RATE" "$csv" "$srv_port:$lport"
    case $load_rc in
      0 | 1) ;;
      *) die "sipp failed in the memory test of $target (exit $load_rc)" ;;
    esac
    read -r out ok failed retrans elapsed resp < <(python3 "$stat_py" "$WORK/sipp-$target-mem-$round.0.stat.csv") ||
      die "no statistics in $WORK/sipp-$target-mem-$round.0.stat.csv"
    if ! kill -0 "$srv_pid" 2>/dev/null; then
      log "$target exited during the memory test; last lines of $WORK/$target-mem.log:"
      tail -n 30 "$WORK/$target-mem.log" >&2 || true
      forget_pid "$srv_pid"
      return 1
    fi
    gauge=n/a
    if [ "$target" = kubepbx ]; then
      for ((i = 0; i < 20; i++)); do
        gauge=$(registrations_gauge)
        [ "$gauge" != "$MEM_BINDINGS" ] || break
        sleep 0.5
      done
    fi
    # Steady state: the round's server transactions keep their responses for Timer J
    # (32 s over UDP) and are not binding memory; wait until they are gone.
    if [ "$target" = kubepbx ]; then
      for ((i = 0; i < 2 * MEM_SETTLE; i++)); do
        [ "$(gauge kubepbx_sip_transactions)" != 0 ] || break
        sleep 0.5
      done
      # kubepbx shrinks its transaction table every 10 s, and jemalloc returns freed pages to
      # the system after about 10 s.
      sleep 13
    fi
    sleep 2
    after=$(mem_kib "$target")
    [ "$round" -gt 1 ] || first_after=$after
    per=$(python3 -c 'import sys; b, a, n = map(int, sys.argv[1:]); print("%.0f" % ((a - b) * 1024 / n))' "$before" "$after" "$MEM_BINDINGS")
    echo "round $round: $ok ok, $failed failed, $retrans retransmissions in ${elapsed}s; kubepbx_registrations $gauge; $unit $after KiB => $per bytes per binding" |
      tee -a "$RESULTS"
    if [ "$heap_before" != n/a ]; then
      heap_after=$(gauge kubepbx_heap_allocated_bytes)
      heap_per=$(python3 -c 'import sys; b, a, n = map(int, sys.argv[1:]); print("%.0f" % ((a - b) / n))' "$heap_before" "$heap_after" "$MEM_BINDINGS")
      echo "round $round: live heap $heap_after bytes => $heap_per heap bytes per binding" | tee -a "$RESULTS"
      [ "$round" -gt 1 ] || mem_heap[$target]="$heap_per heap bytes per binding after round 1"
      [ "$round" -eq 1 ] || mem_heap[$target]+=", $heap_per after round $round"
    fi
  done
  per=$(python3 -c 'import sys; b, a, n = map(int, sys.argv[1:]); print("%.0f" % ((a - b) * 1024 / n))' "$before" "$first_after" "$MEM_BINDINGS")
  mem_per[$target]="$per bytes per binding after round 1"
  if [ "$MEM_ROUNDS" -gt 1 ]; then
    mem_per[$target]+=", $(python3 -c 'import sys; b, a, n = map(int, sys.argv[1:]); print("%.0f" % ((a - b) * 1024 / n))' "$before" "$after" "$MEM_BINDINGS") after round $MEM_ROUNDS"
  fi
  forget_pid "$srv_pid"
}

# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2086 # one target per word
select_targets $TARGETS

{
  echo "kubepbx registration benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "sipp: $(sipp -v 2>&1 | awk '/SIPp/ { print $2; exit }'), socket buffers $SIPP_BUFF"
  if [[ " ${want[*]} " == *" kamailio "* ]]; then
    echo "kamailio: $(kamailio -v 2>&1 | awk 'NR == 1 { print $2, $3; exit }'), $KAMAILIO_CHILDREN UDP workers, tests/bench/kamailio.cfg"
  fi
  if [[ " ${want[*]} " == *" kubepbx "* ]]; then
    echo "kubepbx: $KUBEPBX_BIN ($("$KUBEPBX_BIN" --version 2>/dev/null || echo "version unknown")), RUST_LOG=${RUST_LOG:-unset (info)}${KUBEPBX_ARGS:+, extra args: $KUBEPBX_ARGS}"
  fi
  machine_lines
  echo "columns: got/s = calls sipp made per second of the step; resp_ms = mean REGISTER->200 time;"
  echo "  srv_us = server CPU us per successful registration; srv_cpu%, sipp% = CPU of the server and"
  echo "  of all sipp instances, other% = everything else on the machine, in % of one core;"
  echo "  drops = datagrams the kernel dropped at the server/sipp sockets (receive buffer full)"
} | tee -a "$RESULTS"

failed_targets=()
for t in "${want[@]}"; do
  throughput "$t" || failed_targets+=("$t throughput")
done
for t in "${want[@]}"; do
  memory "$t" || failed_targets+=("$t memory")
done

{
  echo
  echo "== summary"
  for t in "${want[@]}"; do
    if [ -n "${measured[$t]:-}" ]; then
      echo "$t: highest clean rate ${best_rate[$t]}/s, ${best_us[$t]} us CPU per registration at that rate$([ "${top[$t]}" = 0 ] || echo " (every step was clean: a lower bound, raise RATES)")"
    else
      echo "$t: throughput not measured"
    fi
  done
  if [ -n "${measured[kubepbx]:-}" ] && [ -n "${measured[kamailio]:-}" ]; then
    if [ "${best_rate[kamailio]}" -gt 0 ]; then
      echo "ratio kubepbx/kamailio (highest clean rates): $(python3 -c 'import sys; print("%.2f" % (int(sys.argv[1]) / int(sys.argv[2])))' "${best_rate[kubepbx]}" "${best_rate[kamailio]}") (target >= 1.5)"
    else
      echo "ratio kubepbx/kamailio: n/a (kamailio had no clean step)"
    fi
  fi
  for t in "${want[@]}"; do
    [ -z "${mem_per[$t]:-}" ] || echo "$t: ${mem_per[$t]}, at $MEM_BINDINGS bindings$([ "$t" = kubepbx ] && echo " (target <= 1024)")"
    [ -z "${mem_heap[$t]:-}" ] || echo "$t: ${mem_heap[$t]}"
  done
  if [ ${#failed_targets[@]} -gt 0 ]; then
    echo "not measured: ${failed_targets[*]} (see the log lines above and $WORK)"
  fi
} | tee -a "$RESULTS"

if [ ${#failed_targets[@]} -gt 0 ]; then
  status=1
else
  status=0
fi
exit "$status"
