#!/usr/bin/env bash
# Call setup benchmark: kubepbx (media anchored) and Kamailio 5.6 (signalling only, as the peer,
# when installed) between sipp callers and sipp callees.
#
#   KUBEPBX_BIN=$CARGO_TARGET_DIR/release/kubepbx tests/bench/calls.sh        (what `make bench` runs)
#   TARGETS=kamailio tests/bench/calls.sh                                     (the peer alone)
#
# For each target, on 127.0.0.1 only:
#   1. SIPP_INSTANCES callees: extension C_i registers with tests/sipp/register_digest.xml from
#      a free port, then a server-mode sipp runs tests/sipp/bench_uas_answer.xml on that same
#      port until the end (one binding per callee, so the proxy does not fork). A callee answers
#      every INVITE with 180, then after RING_MS 200 with SDP, then waits for ACK and BYE.
#   2. throughput: SIPP_INSTANCES caller sipps in parallel run tests/sipp/bench_uac_call.xml,
#      instance i calling C_i with CALLERS distinct calling users (reused cyclically). One sipp
#      call is one complete call: INVITE with SDP -> 407 -> ACK -> INVITE with an MD5 digest ->
#      (100) -> 180 -> 200 with SDP -> ACK -> HOLD_MS ms -> BYE -> 200. Each rate of CALL_RATES is
#      tried in turn (max(MIN_STEP_CALLS, rate x STEP_SECONDS) calls per step), until a step is
#      not clean: more than 0.1 % of its calls failed, or the callers achieved less than
#      MIN_ACHIEVED_PCT % of the target rate. REFINE_STEPS more steps bisect between the last
#      clean and the first failed rate (to multiples of 100/s). The highest clean rate is
#      reported with the server's CPU time per successful call in that step (utime+stime of
#      the server and its child processes from /proc/PID/stat, before and after the step).
#      After a step that is not clean, kubepbx must still answer /metrics within 5 s; if it does
#      not, it is reported as hung (with the end of its log) and its stepping stops.
# kubepbx anchors the media of every call: each SDP goes through its relay, which leases one
# RTP/RTCP port pair per leg from --rtp-ports (RTP_PORTS) and frees them on BYE. The sipp
# phones send no RTP: this measures call setup and teardown, not media (tests/bench/relay.sh).
# Kamailio (tests/bench/kamailio-calls.cfg) authenticates the INVITE the same way, looks the
# callee up in usrloc, record-routes and relays statefully with tm, without media.
# The tables and the highest clean rates are printed (and written to $WORK/calls-results.txt). The
# figures are reported, not asserted: the exit status is 0 when every requested target was
# measured, 1 when one could not be (did not start, the callees could not register, the smoke
# call failed, crashed), 2 for errors of this script or its environment.
#
# Environment (defaults in brackets):
#   KUBEPBX_BIN        the kubepbx binary (required when TARGETS has kubepbx)
#   TARGETS            [kubepbx kamailio] — kamailio is skipped with a note when not installed
#   CALL_RATES         [500 1000 1500 2000 2500 3000 3500 4000 4500 5000 5500 6000 7000]
#                               calls/s (not RATES, which register.sh reads as registrations/s)
#   CALLERS            [1000]  distinct calling users (extensions 1001…), split over the callers
#   HOLD_MS            [500]   how long a call stays up between its ACK and its BYE
#   RING_MS            [20]    how long a callee rings (180 -> 200); without it Kamailio's 2
#                               workers sometimes relay the 180 after the 200, which fails the
#                               call in sipp
#   STEP_SECONDS       [5]     MIN_STEP_CALLS [2000]   MIN_ACHIEVED_PCT [95]
#   REFINE_STEPS       [2]     SIPP_INSTANCES [2]  (caller sipps, and as many callees)
#   RTP_PORTS          [10000-32767] kubepbx's --rtp-ports (up to the kernel's ephemeral
#                               ports, where sipp's come from); a call leases two pairs (one
#                               per leg) from INVITE to BYE, so at R calls/s about
#                               2 x R x (RING_MS + HOLD_MS + setup) / 1000 pairs are in use
#                               (20000-29999 ran out at 4,600 calls/s, 20000-32767 at 5,200);
#                               the calls the relay refuses for want of ports are counted in
#                               each step's verdict
#                               kubepbx holds 2 sockets per leased pair: the script raises
#                               the open files limit to match when it may, and says in the
#                               header when it cannot (calls refused for want of descriptors
#                               are counted in each step's verdict too)
#   NOISE_PCT          [25]     a step during which other processes used more than this % of a
#                               core is marked and run again (at most twice)
#   KUBEPBX_ARGS       []       more `kubepbx up` arguments (split on spaces). The script passes
#                               --digest-challenge md5 (sipp answers only the first challenge
#                               and knows only MD5) and --ban-threshold 0 (all the load comes
#                               from 127.0.0.1)
#   KAMAILIO_CHILDREN  [nproc]  UDP worker processes of Kamailio (-n)
#   KAMAILIO_SHM_MB    [2048]   Kamailio's shared memory (-m): tm keeps each transaction there
#                               for 5 s after it ends; 512 MB ran out at 4,000 calls/s
#   SIPP_BUFF          [4194304] sipp's socket buffers (-buff_size)
#   BENCH_WORK         [a new /tmp/kubepbx-calls.XXXXXX]  logs, stat files, manifests; a
#                               directory given here is kept, the default one is deleted after
#                               a successful run unless BENCH_KEEP=1
#
# Needs sipp (sip-tester), python3, curl; kamailio for the comparison
# (scripts/install-deps.sh bench installs them). Helpers shared with the other benchmarks are in
# tests/bench/lib.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
uac_scenario=$root/tests/sipp/bench_uac_call.xml
uas_scenario=$root/tests/sipp/bench_uas_answer.xml
stat_py=$here/calls_stat.py
kamailio_cfg=$here/kamailio-calls.cfg

TARGETS=${TARGETS:-kubepbx kamailio}
CALL_RATES=${CALL_RATES:-500 1000 1500 2000 2500 3000 3500 4000 4500 5000 5500 6000 7000}
CALLERS=${CALLERS:-1000}
HOLD_MS=${HOLD_MS:-500}
RING_MS=${RING_MS:-20}
STEP_SECONDS=${STEP_SECONDS:-5}
MIN_STEP_CALLS=${MIN_STEP_CALLS:-2000}
MIN_ACHIEVED_PCT=${MIN_ACHIEVED_PCT:-95}
REFINE_STEPS=${REFINE_STEPS:-2}
SIPP_INSTANCES=${SIPP_INSTANCES:-2}
RTP_PORTS=${RTP_PORTS:-10000-32767}
NOISE_PCT=${NOISE_PCT:-25}
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-$(nproc)}
KAMAILIO_SHM_MB=${KAMAILIO_SHM_MB:-2048}
SIPP_BUFF=${SIPP_BUFF:-4194304}
BENCH_KEEP=${BENCH_KEEP:-0}
DOMAIN=pbx.example.com
FIRST_USER=1001
ADMIN_TOKEN=bench

for cmd in sipp python3 curl getconf pgrep; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (scripts/install-deps.sh bench installs the tools)"
done
for f in "$uac_scenario" "$uas_scenario" "$reg_scenario" "$gen_users" "$gen_manifests" "$stat_py" "$kamailio_cfg"; do
  [ -f "$f" ] || die "missing $f"
done
for n in "$CALLERS" "$HOLD_MS" "$RING_MS" "$KAMAILIO_SHM_MB" "$STEP_SECONDS" "$MIN_STEP_CALLS" "$MIN_ACHIEVED_PCT" "$REFINE_STEPS" "$SIPP_INSTANCES" "$NOISE_PCT" "$KAMAILIO_CHILDREN" "$SIPP_BUFF"; do
  [[ $n =~ ^[0-9]+$ ]] || die "not a number: $n"
done
for r in $CALL_RATES; do
  [[ $r =~ ^[1-9][0-9]*$ ]] || die "CALL_RATES: not a positive number: $r"
done
[[ $RTP_PORTS =~ ^([0-9]+)-([0-9]+)$ ]] || die "RTP_PORTS must be LO-HI, e.g. 20000-29999"
RTP_PAIRS=$(((BASH_REMATCH[2] - BASH_REMATCH[1] + 1) / 2))
if [ "$SIPP_INSTANCES" -lt 1 ] || [ "$CALLERS" -lt "$SIPP_INSTANCES" ]; then
  die "need SIPP_INSTANCES >= 1 and CALLERS >= SIPP_INSTANCES"
fi
# kubepbx holds two sockets per leased port pair: let it open them all (and its own files).
FDS_WANTED=$((RTP_PAIRS * 2 + 4096))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$FDS_WANTED" ]; then
  ulimit -n "$FDS_WANTED" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

init_work kubepbx-calls calls-results.txt

# ---------------------------------------------------------------------------------------------
# Users and callees.

callee_user() { echo $((FIRST_USER + CALLERS + $1)); } # the callee of caller instance $1

# callers_csv: $WORK/callers-<i>.csv, CALLERS users from FIRST_USER split into SIPP_INSTANCES
# consecutive ranges.
callers_csv() {
  local i first=$FIRST_USER size
  for ((i = 0; i < SIPP_INSTANCES; i++)); do
    size=$((CALLERS / SIPP_INSTANCES + (i == SIPP_INSTANCES - 1 ? CALLERS % SIPP_INSTANCES : 0)))
    [ -f "$WORK/callers-$i.csv" ] || python3 "$gen_users" "$size" --first "$first" -o "$WORK/callers-$i.csv"
    first=$((first + size))
  done
}

callee_csv() { # i: $WORK/callee-<i>.csv (one user), printed
  local csv=$WORK/callee-$1.csv
  [ -f "$csv" ] || python3 "$gen_users" 1 --first "$(callee_user "$1")" -o "$csv"
  echo "$csv"
}

# start_callees TARGET: registers callee i from port callee_ports[i], then starts the UAS sipp
# on it (callee_pids[i]). Returns 1 when one cannot register or does not start.
callee_ports=()
callee_pids=()
start_callees() {
  local target=$1 i port csv rc try
  callee_ports=()
  callee_pids=()
  for ((i = 0; i < SIPP_INSTANCES; i++)); do
    csv=$(callee_csv "$i")
    for try in 1 2 3; do # another program may take the free port before sipp binds it
      port=$(free_port udp)
      rc=0
      sipp "127.0.0.1:$srv_port" -sf "$reg_scenario" -inf "$csv" \
        -key domain "$DOMAIN" -key expires 3600 -auth_uri "$DOMAIN" \
        -t u1 -i 127.0.0.1 -p "$port" -m 1 -nostdin -default_behaviors all,-bye \
        -timeout 20s -timeout_error -recv_timeout 5000 \
        -trace_err -error_file "$WORK/$target-callee-$i.register.errors.log" \
        >"$WORK/$target-callee-$i.register.out" 2>&1 </dev/null || rc=$?
      if [ "$rc" -eq 0 ] || ! grep -qi 'address already in use' "$WORK/$target-callee-$i.register.out"; then
        break
      fi
    done
    if [ "$rc" -ne 0 ]; then
      log "$target: callee $(callee_user "$i") could not register (sipp exit $rc); see $WORK/$target-callee-$i.register.*"
      tail -n 20 "$WORK/$target-callee-$i.register.out" >&2 || true
      return 1
    fi
    rm -f "$WORK/$target-callee-$i".uas.*
    sipp "127.0.0.1:$srv_port" -sf "$uas_scenario" -inf "$csv" -key domain "$DOMAIN" \
      -t u1 -i 127.0.0.1 -p "$port" -mi 127.0.0.1 -mp "$(free_port udp)" -buff_size "$SIPP_BUFF" \
      -d "$RING_MS" -nostdin -trace_stat -fd 1 -stf "$WORK/$target-callee-$i.uas.stat.csv" \
      -trace_err -error_file "$WORK/$target-callee-$i.uas.errors.log" -max_log_size 20000000 \
      >"$WORK/$target-callee-$i.uas.out" 2>&1 </dev/null &
    callee_pids+=("$!")
    callee_ports+=("$port")
    pids+=("$!")
  done
  for i in "${!callee_pids[@]}"; do
    local n
    for ((n = 0; n < 100; n++)); do
      udp_bound "${callee_ports[$i]}" && break
      if ! kill -0 "${callee_pids[$i]}" 2>/dev/null; then
        log "$target: the callee sipp $i exited; last lines of $WORK/$target-callee-$i.uas.out:"
        tail -n 20 "$WORK/$target-callee-$i.uas.out" >&2 || true
        return 1
      fi
      sleep 0.1
    done
    udp_bound "${callee_ports[$i]}" || {
      log "$target: the callee sipp $i did not bind 127.0.0.1:${callee_ports[$i]}"
      return 1
    }
  done
  log "$target: callees $(callee_user 0)…$(callee_user $((SIPP_INSTANCES - 1))) registered, answering on ${callee_ports[*]}"
}

stop_callees() {
  local p
  for p in "${callee_pids[@]+"${callee_pids[@]}"}"; do forget_pid "$p"; done
  callee_pids=()
}

# ---------------------------------------------------------------------------------------------
# Callers.

# load NAME CALLS RATE LOCAL_PORT...: runs bench_uac_call.xml from one sipp per local port, in
# parallel; instance i makes its share of CALLS at its share of RATE with callers-<i>.csv,
# calling callee i. Instance i writes $WORK/sipp-calls-NAME.<i>.{stat.csv,errors.log,out}. Sets
# load_rc: the worst sipp exit code (0 every call succeeded, 1 some failed; other codes are
# errors of sipp itself).
load_rc=0
load() {
  local name=$1 calls=$2 rate=$3
  shift 3
  local n=$# i=0 lport c r timeout limit rc callee
  local -a running=()
  load_rc=0
  rm -f "$WORK/sipp-calls-$name".*
  for lport in "$@"; do
    c=$((calls / n + (i == 0 ? calls % n : 0)))
    r=$((rate / n + (i == 0 ? rate % n : 0)))
    [ "$r" -ge 1 ] || r=1
    timeout=$((c * 4 / r + (HOLD_MS + RING_MS) / 1000 + 30))
    # Concurrent calls: ring and hold plus up to 5 s of setup (recv_timeout) at the target rate.
    limit=$((r * (RING_MS + HOLD_MS + 5000) / 1000 + 10))
    callee=$(callee_user "$i")
    sipp "127.0.0.1:$srv_port" -sf "$uac_scenario" -inf "$WORK/callers-$i.csv" \
      -key domain "$DOMAIN" -s "$callee" -auth_uri "$callee@$DOMAIN" \
      -t u1 -i 127.0.0.1 -p "$lport" -mi 127.0.0.1 -mp "$(free_port udp)" -buff_size "$SIPP_BUFF" \
      -m "$c" -r "$r" -rp 1000 -l "$limit" -d "$HOLD_MS" \
      -timeout "${timeout}s" -timeout_error -recv_timeout 5000 \
      -nostdin -default_behaviors all,-bye \
      -trace_stat -fd 1 -stf "$WORK/sipp-calls-$name.$i.stat.csv" \
      -trace_err -error_file "$WORK/sipp-calls-$name.$i.errors.log" -max_log_size 20000000 \
      >"$WORK/sipp-calls-$name.$i.out" 2>&1 </dev/null &
    running+=("$!")
    pids+=("$!")
    i=$((i + 1))
  done
  for i in "${!running[@]}"; do
    rc=0
    wait "${running[$i]}" || rc=$?
    case $rc in
      0) ;;
      1) [ "$load_rc" -ne 0 ] || load_rc=1 ;;
      *)
        load_rc=$rc
        log "$name: sipp instance $i exited $rc; last lines of $WORK/sipp-calls-$name.$i.out:"
        tail -n 15 "$WORK/sipp-calls-$name.$i.out" >&2 || true
        ;;
    esac
    forget_pid "${running[$i]}"
  done
}

# One call per caller instance must succeed before measuring.
smoke() { # target lport...
  local target=$1
  shift
  load "$target-smoke" "$#" "$#" "$@"
  if [ "$load_rc" != 0 ]; then
    log "$target: the smoke calls failed (sipp exit $load_rc); see $WORK/sipp-calls-$target-smoke.*"
    tail -n 20 "$WORK/sipp-calls-$target-smoke.0.errors.log" "$WORK/sipp-calls-$target-smoke.0.out" >&2 2>/dev/null || true
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Targets: start_target TARGET PREFIX sets srv_pid, srv_port (and http_port for kubepbx).

start_kubepbx() {
  local prefix=$1 manifests=$WORK/manifests i
  if [ ! -d "$manifests" ]; then
    python3 "$gen_manifests" "$((CALLERS + SIPP_INSTANCES))" --first "$FIRST_USER" -o "$manifests"
  fi
  srv_port=$(free_port udp)
  http_port=$(free_port tcp)
  rm -rf "$WORK/$prefix-data"
  log "kubepbx: starting with $((CALLERS + SIPP_INSTANCES)) extensions (SIP udp 127.0.0.1:$srv_port, HTTP 127.0.0.1:$http_port, RTP ports $RTP_PORTS)"
  # shellcheck disable=SC2086 # KUBEPBX_ARGS is split on spaces on purpose
  "$KUBEPBX_BIN" up -f "$manifests" --sip "127.0.0.1:$srv_port" --http "127.0.0.1:$http_port" \
    --advertise 127.0.0.1 --domain "$DOMAIN" --data-dir "$WORK/$prefix-data" \
    --admin-token "$ADMIN_TOKEN" --digest-challenge md5 --ban-threshold 0 \
    --rtp-ports "$RTP_PORTS" ${KUBEPBX_ARGS:-} >"$WORK/$prefix.log" 2>&1 </dev/null &
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
  kamailio -f "$kamailio_cfg" -l "udp:127.0.0.1:$srv_port" -n "$KAMAILIO_CHILDREN" \
    -b "$SIPP_BUFF" -m "$KAMAILIO_SHM_MB" -M 8 -DD -E -Y "$WORK/$prefix-run" -w "$WORK/$prefix-run" \
    >"$WORK/$prefix.log" 2>&1 </dev/null &
  srv_pid=$!
  pids+=("$srv_pid")
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$srv_pid" 2>/dev/null; then
      log "kamailio exited during startup; last lines of $WORK/$prefix.log:"
      tail -n 30 "$WORK/$prefix.log" >&2 || true
      return 1
    fi
    if [ "$(pgrep -c -P "$srv_pid" || true)" -ge "$KAMAILIO_CHILDREN" ] && udp_bound "$srv_port"; then
      sleep 0.5
      return 0
    fi
    sleep 0.1
  done
  log "kamailio: not listening after 10 s"
  return 1
}

start_target() { # target prefix: up to 3 tries, as a free port can be taken by another
  # program between the moment it is picked and the server's bind
  local try rc
  for try in 1 2 3; do
    rc=0
    case $1 in
      kubepbx) start_kubepbx "$2" || rc=$? ;;
      kamailio) start_kamailio "$2" || rc=$? ;;
      *) die "unknown target $1" ;;
    esac
    [ "$rc" -ne 0 ] || return 0
    forget_pid "$srv_pid"
    if [ "$try" -ge 3 ] || ! grep -qi 'address already in use' "$WORK/$2.log" 2>/dev/null; then
      return 1
    fi
    log "$1: its port was taken meanwhile; trying other ports"
  done
}

# A value of kubepbx's /metrics, summed over label sets (counters by their name without
# _total); n/a when absent (older builds do not export the call and media metrics).
metric() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$http_port/metrics" 2>/dev/null |
    awk -v name="$1" '
      { n = $1; sub(/\{.*/, "", n); c = n; sub(/_total$/, "", c) }
      n == name || c == name { s += $2; found = 1 }
      END { if (found) printf "%d\n", s; else print "n/a" }'
}

# Whether the server still answers: kubepbx's /metrics (served through its SIP core) within 5 s;
# Kamailio: its process is alive.
# shellcheck disable=SC2317 # called from step
server_answers() {
  kill -0 "$srv_pid" 2>/dev/null || return 1
  [ "$1" != kubepbx ] || [ "$(metric kubepbx_sip_transactions)" != n/a ]
}

# ---------------------------------------------------------------------------------------------
# Throughput: step the rate. Appends the table to $RESULTS and sets best_rate[target],
# best_us[target].
declare -A best_rate=() best_us=() best_setup=() measured=() top=() hung=()

row() { printf '%-8s %6s %6s %6s %6s %5s %7s %6s %8s %6s %7s %8s %5s %5s %6s %9s  %s\n' "$@"; }
TABLE_HEADER=$(row target rate/s calls ok failed fail% retrans got/s setup_ms call_ms srv_us srv_cpu% uac% uas% other% drops verdict)

# step TARGET RATE LOCAL_PORT...: one step against the running server; prints its row (and
# appends it to $RESULTS); sets step_us and step_setup; returns 0 when clean, 1 when not.
step_us=n/a
step_setup=n/a
# shellcheck disable=SC2317 # called through ramp (lib.sh)
step() {
  local target=$1 rate=$2
  shift 2
  local -a lports=("$@") j0 j1
  local calls name c0 c1 u0 u1 s0 s1 m0 m1 d0 d1 sd0 sd1 verdict reasons log_at no_ports no_fds
  local out ok failed retrans create setup call_ms got us srv_pct uac_pct uas_pct other_pct fail_pct
  calls=$((rate * STEP_SECONDS))
  [ "$calls" -ge "$MIN_STEP_CALLS" ] || calls=$MIN_STEP_CALLS
  name="$target-$rate"
  log_at=$(stat -c %s "$WORK/$target-calls.log")
  c0=$(cpu_ticks "$srv_pid")
  u0=$(cpu_ticks "${callee_pids[@]}")
  read -r -a j0 <<<"$(machine_jiffies)"
  children_cpu
  s0=$children_ms
  d0=$(udp_drops "$srv_port")
  sd0=$(sum_drops "${lports[@]}" "${callee_ports[@]}")
  m0=$(date +%s%N)
  load "$name" "$calls" "$rate" "${lports[@]}"
  m1=$(date +%s%N)
  children_cpu
  s1=$children_ms
  read -r -a j1 <<<"$(machine_jiffies)"
  c1=$(cpu_ticks "$srv_pid")
  u1=$(cpu_ticks "${callee_pids[@]}")
  d1=$(udp_drops "$srv_port")
  sd1=$(sum_drops "${lports[@]}" "${callee_ports[@]}")
  case $load_rc in
    0 | 1) ;;
    *) die "sipp failed at step $name (exit $load_rc), not a verdict on $target" ;;
  esac
  read -r out ok failed retrans _ create setup call_ms reasons < <(python3 "$stat_py" uac "$WORK/sipp-calls-$name".*.stat.csv) ||
    die "no statistics in $WORK/sipp-calls-$name.*.stat.csv"
  # got/s: calls the callers started per second; us: server CPU per successful call; CPU
  # shares over the step's wall time, in % of one core: server, callers, callees, the rest.
  read -r got us fail_pct srv_pct uac_pct uas_pct other_pct < <(python3 -c '
import sys
out, create = int(sys.argv[1]), float(sys.argv[2])
ok, failed, calls, ticks, uas_ticks, clk, uac_ms, wall_ns, jb, jt, ncpu = map(int, sys.argv[3:])
wall = max(wall_ns / 1e9, 1e-9)
srv, uas, uac = ticks / clk / wall * 100, uas_ticks / clk / wall * 100, uac_ms / 1000 / wall * 100
busy = jb * 100 / max(jt, 1) * ncpu
print(round(out / create),
      "%.1f" % (ticks * 1e6 / clk / ok) if ok else "n/a",
      "%.2f" % (failed * 100 / calls),
      "%.0f" % srv, "%.0f" % uac, "%.0f" % uas, "%.0f" % max(busy - srv - uac - uas, 0))
' "$out" "$create" "$ok" "$failed" "$calls" "$((c1 - c0))" "$((u1 - u0))" "$CLK_TCK" "$((s1 - s0))" \
    "$((m1 - m0))" "$((j1[0] - j0[0]))" "$((j1[1] - j0[1]))" "$NCPU")
  verdict=clean
  step_hung=0
  if ! kill -0 "$srv_pid" 2>/dev/null; then
    verdict="server exited"
  elif [ $((failed * 1000)) -gt "$calls" ]; then
    verdict="failed > 0.1%"
  elif [ $((got * 100)) -lt $((rate * MIN_ACHIEVED_PCT)) ]; then
    verdict="rate < ${MIN_ACHIEVED_PCT}%"
  fi
  [ "$reasons" = - ] || verdict="$verdict ($reasons)"
  no_ports=$(tail -c +"$((log_at + 1))" "$WORK/$target-calls.log" | grep -c 'no free RTP ports' || true)
  [ "$no_ports" = 0 ] || verdict="$verdict; $no_ports calls refused: no free RTP ports"
  no_fds=$(tail -c +"$((log_at + 1))" "$WORK/$target-calls.log" | grep -c 'refused an SDP.*Too many open files' || true)
  [ "$no_fds" = 0 ] || verdict="$verdict; $no_fds calls refused: open files limit ($(ulimit -n))"
  if [ "$verdict" != clean ] && kill -0 "$srv_pid" 2>/dev/null; then
    sleep 1
    server_answers "$target" || {
      step_hung=1
      verdict="$verdict; SERVER NOT ANSWERING"
    }
  fi
  step_noisy=0
  if [ "$other_pct" -gt "$NOISE_PCT" ]; then
    step_noisy=1
    verdict="$verdict; other load on the machine"
  fi
  row "$target" "$rate" "$calls" "$ok" "$failed" "$fail_pct" "$retrans" "$got" "$setup" "$call_ms" \
    "$us" "$srv_pct" "$uac_pct" "$uas_pct" "$other_pct" "$((d1 - d0))/$((sd1 - sd0))" "$verdict" |
    tee -a "$RESULTS"
  step_us=$us
  step_setup=$setup
  # Let queues, retransmissions and the calls' transactions drain before the next step.
  if [[ $verdict == clean* ]]; then sleep 2; else sleep 6; fi
  [[ $verdict == clean* ]]
}

# Rate above which kubepbx's relay could run out of port pairs (2 per call, held from the
# INVITE to the BYE: ring and hold plus about 100 ms of setup and teardown when clean).
port_limit_rate() { echo $((RTP_PAIRS * 1000 / 2 / (RING_MS + HOLD_MS + 100))); }

# Callbacks of ramp (lib.sh), run inside throughput: its target and lports.
# shellcheck disable=SC2317
calls_step() { step "$target" "$1" "${lports[@]}"; }
# shellcheck disable=SC2317
calls_clean() {
  best_rate[$target]=$1
  best_us[$target]=$step_us
  best_setup[$target]=$step_setup
}
# shellcheck disable=SC2317
server_alive() { kill -0 "$srv_pid" 2>/dev/null; }

throughput() {
  local target=$1 i bad uas
  local -a lports=()
  start_target "$target" "$target-calls" || return 1
  if ! start_callees "$target"; then
    stop_callees
    forget_pid "$srv_pid"
    return 1
  fi
  callers_csv
  for ((i = 0; i < SIPP_INSTANCES; i++)); do lports+=("$(free_port udp)"); done
  if ! smoke "$target" "${lports[@]}"; then
    stop_callees
    forget_pid "$srv_pid"
    return 1
  fi
  measured[$target]=1
  best_rate[$target]=0
  best_us[$target]=n/a
  best_setup[$target]=n/a
  {
    echo
    echo "== $target: $SIPP_INSTANCES caller sipps ($CALLERS calling users) -> $SIPP_INSTANCES callee sipps, bench_uac_call.xml over UDP,"
    echo "   hold ${HOLD_MS} ms, steps of max($MIN_STEP_CALLS, rate x ${STEP_SECONDS}s) calls"
    if [ "$target" = kubepbx ]; then
      echo "   media anchored: $RTP_PAIRS RTP port pairs ($RTP_PORTS), 2 per call: enough up to about $(port_limit_rate) calls/s at this hold"
    fi
    echo "$TABLE_HEADER"
  } | tee -a "$RESULTS"
  # Each rate of CALL_RATES until one is not clean, then bisect (to multiples of 100/s).
  # shellcheck disable=SC2086 # CALL_RATES is a list
  ramp calls_step calls_clean server_alive 100 $CALL_RATES
  top[$target]=$ramp_top
  bad=$ramp_bad
  if [ "$target" = kubepbx ] && [ "$bad" -gt "$(port_limit_rate)" ]; then
    echo "note: the first failed rate ($bad/s) needs more RTP port pairs than RTP_PORTS=$RTP_PORTS has; widen it to tell" | tee -a "$RESULTS"
  fi
  if [ "$step_hung" = 1 ]; then
    hung[$target]=$bad
    {
      echo "$target: STOPPED ANSWERING after the step at $bad calls/s (SIP calls time out, /metrics does not answer);"
      echo "  process state: $(awk '$1 == "State:" { print $2, $3 }' "/proc/$srv_pid/status" 2>/dev/null), CPU $(cpu_ticks "$srv_pid") ticks in total; last log lines:"
      tail -n 5 "$WORK/$target-calls.log" | cut -c1-240 | sed 's/^/  /'
    } | tee -a "$RESULTS"
  fi
  if ! kill -0 "$srv_pid" 2>/dev/null; then
    log "$target exited during the throughput test; last lines of $WORK/$target-calls.log:"
    tail -n 30 "$WORK/$target-calls.log" >&2 || true
    stop_callees
    forget_pid "$srv_pid"
    return 1
  fi
  sleep 2
  for i in "${!callee_pids[@]}"; do
    uas=$(python3 "$stat_py" uas "$WORK/$target-callee-$i.uas.stat.csv" 2>/dev/null || echo "n/a")
    echo "$target: callee $(callee_user "$i") (incoming ok failed retransmissions failures): $uas" | tee -a "$RESULTS"
  done
  if [ "$target" = kubepbx ]; then
    # Everything must be released once the calls are over (the transactions of the last
    # step live on for up to 32 s, the calls and media sessions must not).
    echo "kubepbx after the steps: calls_active $(metric kubepbx_calls_active), media_sessions $(metric kubepbx_media_sessions)," \
      "media_ports_free $(metric kubepbx_media_ports_free)/$(metric kubepbx_media_ports_total), sip_transactions $(metric kubepbx_sip_transactions)" |
      tee -a "$RESULTS"
    {
      echo "kubepbx: log lines $(wc -l <"$WORK/$target-calls.log"), matching WARN|ERROR|panic: $(grep -cE 'WARN|ERROR|panic' "$WORK/$target-calls.log" || true)," \
        "calls refused for want of RTP ports: $(grep -c 'no free RTP ports' "$WORK/$target-calls.log" || true)," \
        "for want of file descriptors: $(grep -c 'refused an SDP.*Too many open files' "$WORK/$target-calls.log" || true)"
      # The most frequent warnings, with their variable fields (ids, addresses) blanked.
      grep -E 'WARN|ERROR|panic' "$WORK/$target-calls.log" |
        sed -E 's/^[0-9T:.Z-]+ +//; s/[0-9]+(\.[0-9]+)*/N/g' | sort | uniq -c | sort -rn | head -n 8 |
        sed 's/^/  /' || true
    } | tee -a "$RESULTS"
  fi
  if [ "$target" = kamailio ]; then
    echo "kamailio: log lines matching 'out of mem': $(grep -c 'out of mem' "$WORK/$target-calls.log" || true) (KAMAILIO_SHM_MB=$KAMAILIO_SHM_MB)" |
      tee -a "$RESULTS"
  fi
  stop_callees
  forget_pid "$srv_pid"
}

# ---------------------------------------------------------------------------------------------
# shellcheck disable=SC2086 # one target per word
select_targets $TARGETS

{
  echo "kubepbx call setup benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "sipp: $(sipp -v 2>&1 | awk '/SIPp/ { print $2; exit }'), socket buffers $SIPP_BUFF"
  if [[ " ${want[*]} " == *" kamailio "* ]]; then
    echo "kamailio: $(kamailio -v 2>&1 | awk 'NR == 1 { print $2, $3; exit }'), $KAMAILIO_CHILDREN UDP workers, tests/bench/kamailio-calls.cfg"
  fi
  if [[ " ${want[*]} " == *" kubepbx "* ]]; then
    echo "kubepbx: $KUBEPBX_BIN ($("$KUBEPBX_BIN" --version 2>/dev/null || echo "version unknown")), RUST_LOG=${RUST_LOG:-unset (info)}, --rtp-ports $RTP_PORTS${KUBEPBX_ARGS:+, extra args: $KUBEPBX_ARGS}, open files limit $(ulimit -n)$([ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$FDS_WANTED" ] || echo " (below the $FDS_WANTED the port range needs: calls may fail with 'Too many open files')")"
  fi
  machine_lines
  echo "calls: hold ${HOLD_MS} ms, ring ${RING_MS} ms; $CALLERS calling users, $SIPP_INSTANCES caller and $SIPP_INSTANCES callee sipps"
  echo "columns: got/s = calls the callers started per second; setup_ms = mean first INVITE -> 200;"
  echo "  call_ms = mean call length (first INVITE -> 200 for the BYE, hold included); srv_us = server"
  echo "  CPU us per successful call; srv_cpu%, uac%, uas% = CPU of the server, the caller sipps and the"
  echo "  callee sipps, other% = everything else on the machine, in % of one core; drops = datagrams the"
  echo "  kernel dropped at the server / sipp sockets (receive buffer full); failure reasons are sipp's"
} | tee -a "$RESULTS"

failed_targets=()
for t in "${want[@]}"; do
  throughput "$t" || failed_targets+=("$t")
done

{
  echo
  echo "== summary"
  for t in "${want[@]}"; do
    if [ -n "${measured[$t]:-}" ]; then
      echo "$t: highest clean rate ${best_rate[$t]} calls/s, ${best_us[$t]} us server CPU per call, mean setup ${best_setup[$t]} ms at that rate$([ "${top[$t]}" = 0 ] || echo " (every step was clean: a lower bound, raise CALL_RATES)")"
      [ -z "${hung[$t]:-}" ] || echo "$t: WARNING: stopped answering after the step at ${hung[$t]} calls/s (see above)"
    else
      echo "$t: not measured"
    fi
  done
  if [ -n "${measured[kubepbx]:-}" ] && [ -n "${measured[kamailio]:-}" ] && [ "${best_rate[kamailio]}" -gt 0 ]; then
    echo "ratio kubepbx/kamailio (highest clean rates): $(python3 -c 'import sys; print("%.2f" % (int(sys.argv[1]) / int(sys.argv[2])))' "${best_rate[kubepbx]}" "${best_rate[kamailio]}")"
  fi
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
