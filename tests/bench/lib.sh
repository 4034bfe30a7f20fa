# shellcheck shell=bash disable=SC2034 # its variables are read by the scripts that source it
# Helpers shared by the benchmark scripts of tests/bench (register.sh, calls.sh, relay.sh,
# cluster.sh). Sourced, never run:
#
#   here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   . "$here/lib.sh"
#   …settings and their checks…
#   init_work kubepbx-bench results.txt     # $WORK, $RESULTS, the EXIT/INT/TERM traps
#
# What a script gets:
#   log, die                  timestamped messages on stderr; die exits 2 (an error of the script
#                             or its environment)
#   pids, status              every process started is appended to pids and stopped on exit
#                             (last started first); status is the exit status the EXIT trap
#                             sees (2 until the script sets it), which decides whether the work
#                             directory is deleted
#   stop_pid, stop_pids, forget_pid
#   free_port, udp_bound      127.0.0.1 only
#   machine_lines, select_targets (fills want[])
#   cpu_ticks, machine_jiffies, busy_over_1s, children_cpu, udp_drops, sum_drops
#   users_csv, reg_load, reg_load_start, reg_load_wait, reg_smoke
#                             sipp running tests/sipp/register_digest.xml (needs DOMAIN,
#                             FIRST_USER, SIPP_BUFF)
#   step_again, ramp          stepping a rate until a step is not clean, then bisecting
# Variables a script may set before init_work: kept_note (how the kept work directory is named
# in the last log line). BENCH_WORK and BENCH_KEEP are read as register.sh describes them.

lib_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lib_root=$(cd "$lib_here/../.." && pwd)
reg_scenario=$lib_root/tests/sipp/register_digest.xml
gen_users=$lib_root/tests/sipp/gen_users.py
gen_manifests=$lib_here/gen_manifests.py
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Work directory and processes: everything started is tracked and stopped on exit.
pids=()
status=2 # until the end is reached, an exit is an error of the script
kept_note="work files (logs, sipp statistics)"

# init_work NAME RESULTS_FILE: $WORK (BENCH_WORK, or a new /tmp/NAME.XXXXXX), $RESULTS (emptied),
# and the traps that stop every tracked process on exit.
init_work() {
  WORK=${BENCH_WORK:-$(mktemp -d "/tmp/$1.XXXXXX")}
  mkdir -p "$WORK"
  RESULTS=$WORK/$2
  : >"$RESULTS"
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

stop_pid() { # pid: TERM, up to 5 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_pids() { # pid...: TERM to all at once, up to 5 s, then KILL; drops them from pids
  local pid i alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    alive=0
    for pid in "$@"; do
      if kill -0 "$pid" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 1 ] || break
    sleep 0.1
  done
  for pid in "$@"; do forget_pid "$pid"; done
}

# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop_pid "${pids[$i]}"
  done
  pids=()
  if [ "$status" -eq 0 ] && [ "${BENCH_KEEP:-0}" != 1 ] && [ -z "${BENCH_WORK:-}" ]; then
    rm -rf "$WORK"
  else
    log "$kept_note kept in $WORK"
  fi
}

forget_pid() { # pid: stop it and drop it from the list
  local pid=$1 p rest=()
  stop_pid "$pid"
  for p in "${pids[@]}"; do
    [ "$p" = "$pid" ] || rest+=("$p")
  done
  pids=("${rest[@]+"${rest[@]}"}")
}

free_port() { # udp|tcp: a port the kernel hands out as free on 127.0.0.1
  python3 -c '
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
' "$1"
}

udp_bound() { # port: whether a UDP socket is bound to 127.0.0.1:port
  awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { f = 1 } END { exit !f }' /proc/net/udp
}

# ---------------------------------------------------------------------------------------------
# Measurements from /proc.

# CPU time (clock ticks) of the given pids and their direct children (Kamailio forks its
# workers; kubepbx, etcd and sipp are one process each, whose /proc/PID/stat sums its threads).
cpu_ticks() {
  local total=0 p s
  local -a f
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" 2>/dev/null || true; done); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) } # after "(comm) ": field 3 (state) is f[0], utime f[11], stime f[12]
    read -r -a f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# "busy total" jiffies of the whole machine (from the cpu line of /proc/stat).
machine_jiffies() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# % of one core the whole machine was busy during the next second.
# machine_lines: the "machine:" line and the load over the next second (with a warning when
# something else runs), for the header of a results file.
machine_lines() {
  local busy
  echo "machine: $NCPU CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  busy=$(busy_over_1s)
  echo "machine load before the run: ${busy}% of one core busy over 1 s$([ "$busy" -lt 20 ] || echo " — WARNING: something else is running, the figures will be off")"
}

# select_targets TARGETS...: fills want[] with kubepbx (KUBEPBX_BIN must be an executable) and
# kamailio (skipped with a note in $RESULTS when not installed); dies when nothing is left.
select_targets() {
  local t
  want=()
  for t in "$@"; do
    case $t in
      kubepbx)
        [ -n "${KUBEPBX_BIN:-}" ] || die "KUBEPBX_BIN is not set (make bench sets it)"
        [ -x "$KUBEPBX_BIN" ] || die "KUBEPBX_BIN=$KUBEPBX_BIN is not an executable"
        want+=(kubepbx)
        ;;
      kamailio)
        if command -v kamailio >/dev/null 2>&1; then
          want+=(kamailio)
        else
          echo "kamailio is not installed: no comparison (apt-get install kamailio, or scripts/install-deps.sh bench)" | tee -a "$RESULTS"
        fi
        ;;
      *) die "unknown target $t (TARGETS takes kubepbx and/or kamailio)" ;;
    esac
  done
  [ ${#want[@]} -gt 0 ] || die "nothing to measure (TARGETS=$*)"
}

busy_over_1s() {
  local -a q0 q1
  read -r -a q0 <<<"$(machine_jiffies)"
  sleep 1
  read -r -a q1 <<<"$(machine_jiffies)"
  echo $(((q1[0] - q0[0]) * 100 * NCPU / (q1[1] - q0[1] > 0 ? q1[1] - q0[1] : 1)))
}

# CPU time (ms) of the finished children of this shell, into $children_ms (sipp runs to its end
# between two calls, so the delta around a step is sipp's). `times` has to run in this shell,
# not in a $( ) subshell, hence the variable.
children_ms=0
children_cpu() {
  times >"$WORK/.times"
  children_ms=$(awk 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
    printf "%d\n", t * 1000
  }' "$WORK/.times")
}

# Datagrams the kernel dropped (receive buffer full) on the UDP sockets bound to 127.0.0.1:port.
udp_drops() {
  local hex
  hex=$(printf '0100007F:%04X' "$1")
  awk -v a="$hex" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp
}

sum_drops() { # port...: kernel drops over these local UDP ports
  local p t=0
  for p in "$@"; do t=$((t + $(udp_drops "$p"))); done
  echo "$t"
}

# ---------------------------------------------------------------------------------------------
# sipp registering users with tests/sipp/register_digest.xml.

# users_csv COUNT N [FIRST]: writes $WORK/users-COUNT-of-N[-from-FIRST]-<i>.csv, COUNT users
# from FIRST (default FIRST_USER) split into N consecutive ranges, and prints the prefix.
users_csv() {
  local count=$1 n=$2 first=${3:-$FIRST_USER} i size prefix=$WORK/users-$1-of-$2
  [ -z "${3:-}" ] || prefix+="-from-$3"
  for ((i = 0; i < n; i++)); do
    size=$((count / n + (i == n - 1 ? count % n : 0)))
    [ -f "$prefix-$i.csv" ] || python3 "$gen_users" "$size" --first "$first" -o "$prefix-$i.csv"
    first=$((first + size))
  done
  echo "$prefix"
}

# reg_load NAME CALLS RATE CSV_PREFIX SERVER_PORT:LOCAL_PORT...: runs register_digest.xml from
# one sipp per SERVER_PORT:LOCAL_PORT pair, in parallel: instance i (from 0) sends from
# 127.0.0.1:LOCAL_PORT to 127.0.0.1:SERVER_PORT, making its share of CALLS at its share of RATE
# with the users of CSV_PREFIX-<i>.csv, and writes $WORK/sipp-NAME.<i>.{stat.csv,errors.log,out}.
# Sets load_rc: the worst sipp exit code (0 every call succeeded, 1 some failed; other codes are
# errors of sipp itself). reg_load_start starts them (their pids in load_pids) and returns at
# once; reg_load_wait waits for them and sets load_rc.
load_rc=0
load_pids=()
load_name=
reg_load_start() {
  local name=$1 calls=$2 rate=$3 csv=$4
  shift 4
  local n=$# i=0 pair c r timeout
  load_pids=()
  load_name=$name
  rm -f "$WORK/sipp-$name".*
  for pair in "$@"; do
    c=$((calls / n + (i == 0 ? calls % n : 0)))
    r=$((rate / n + (i == 0 ? rate % n : 0)))
    [ "$r" -ge 1 ] || r=1
    timeout=$((c * 4 / r + 30))
    sipp "127.0.0.1:${pair%%:*}" -sf "$reg_scenario" -inf "$csv-$i.csv" \
      -key domain "$DOMAIN" -key expires 3600 -auth_uri "$DOMAIN" \
      -t u1 -i 127.0.0.1 -p "${pair##*:}" -buff_size "$SIPP_BUFF" \
      -m "$c" -r "$r" -rp 1000 \
      -timeout "${timeout}s" -timeout_error -recv_timeout 5000 \
      -nostdin -default_behaviors all,-bye \
      -trace_stat -fd 1 -stf "$WORK/sipp-$name.$i.stat.csv" \
      -trace_err -error_file "$WORK/sipp-$name.$i.errors.log" -max_log_size 20000000 \
      >"$WORK/sipp-$name.$i.out" 2>&1 </dev/null &
    load_pids+=("$!")
    pids+=("$!")
    i=$((i + 1))
  done
}

reg_load_wait() {
  local i rc name=$load_name
  load_rc=0
  for i in "${!load_pids[@]}"; do
    rc=0
    wait "${load_pids[$i]}" || rc=$?
    case $rc in
      0) ;;
      1) [ "$load_rc" -ne 0 ] || load_rc=1 ;;
      *)
        load_rc=$rc
        log "$name: sipp instance $i exited $rc; last lines of $WORK/sipp-$name.$i.out:"
        tail -n 15 "$WORK/sipp-$name.$i.out" >&2 || true
        ;;
    esac
    forget_pid "${load_pids[$i]}"
  done
  load_pids=()
}

reg_load() {
  reg_load_start "$@"
  reg_load_wait
}

# reg_smoke NAME SERVER_PORT LOCAL_PORT [USER]: one registration (USER, default FIRST_USER) must
# succeed before measuring; returns 1 (with the end of sipp's logs) when it does not.
reg_smoke() {
  local name=$1 port=$2 lport=$3 user=${4:-$FIRST_USER} csv
  if [ "$user" = "$FIRST_USER" ]; then csv=$(users_csv 1 1); else csv=$(users_csv 1 1 "$user"); fi
  reg_load "$name-smoke" 1 10 "$csv" "$port:$lport"
  if [ "$load_rc" != 0 ]; then
    log "$name: the smoke registration failed (sipp exit $load_rc); see $WORK/sipp-$name-smoke.*"
    tail -n 20 "$WORK/sipp-$name-smoke.0.errors.log" "$WORK/sipp-$name-smoke.0.out" >&2 2>/dev/null || true
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Stepping the rate. A step command returns 0 when its step was clean and sets step_noisy=1 when
# other processes took more than NOISE_PCT % of a core during it, step_hung=1 when the server
# stopped answering.
step_noisy=0
step_hung=0

# step_again CMD...: runs CMD, repeated (up to twice) while other processes took more than
# NOISE_PCT % of a core during it (e.g. a build running next to the benchmark) and the server
# still answers; the last run counts.
step_again() {
  local try rc
  for try in 1 2 3; do
    rc=0
    "$@" || rc=$?
    [ "$step_noisy" = 1 ] && [ "$step_hung" = 0 ] && [ "$try" -lt 3 ] || return "$rc"
    log "other processes were busy during that step: repeating it in 5 s"
    sleep 5
  done
}

# ramp STEP ON_CLEAN ALIVE GRAIN RATE...: runs `STEP RATE` (through step_again) for each RATE in
# turn until a step is not clean, then REFINE_STEPS more steps bisecting between the last clean
# and the first failed rate (to multiples of GRAIN), while `ALIVE` succeeds and no step hung.
# `ON_CLEAN RATE` runs after each clean step (to keep that step's figures). Sets ramp_best (the
# highest clean rate, 0 when none), ramp_bad (the lowest failed rate, 0 when none failed) and
# ramp_top (1 when every rate of the list was clean: the result is a lower bound).
ramp_best=0
ramp_bad=0
ramp_top=1
ramp() {
  local step_cmd=$1 on_clean=$2 alive=$3 grain=$4 rate i mid
  shift 4
  ramp_best=0
  ramp_bad=0
  ramp_top=1
  for rate in "$@"; do
    if step_again "$step_cmd" "$rate"; then
      ramp_best=$rate
      "$on_clean" "$rate"
    else
      ramp_bad=$rate
      ramp_top=0
      break
    fi
  done
  for ((i = 0; i < REFINE_STEPS && ramp_bad > 0 && ramp_best > 0 && step_hung == 0; i++)); do
    "$alive" || break
    mid=$(((ramp_best + ramp_bad) / 2 / grain * grain))
    if [ "$mid" -le "$ramp_best" ] || [ "$mid" -ge "$ramp_bad" ]; then break; fi
    if step_again "$step_cmd" "$mid"; then
      ramp_best=$mid
      "$on_clean" "$mid"
    else
      ramp_bad=$mid
    fi
  done
}
