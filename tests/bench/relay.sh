#!/usr/bin/env bash
# Media relay benchmark: kubepbx's in-process RTP relay (LocalRelay) under N concurrent calls,
# through media/examples/relay_bench.rs.
#
#   RELAY_BENCH_BIN=$CARGO_TARGET_DIR/release/examples/relay_bench tests/bench/relay.sh
#                                                                     (what `make bench` runs)
#   CALLS_LIST="1000" WEBRTC_CALLS_LIST="" SECONDS_PER_RUN=30 RELAY_BENCH_BIN=… tests/bench/relay.sh
#
# Plain RTP: for each arrival pattern of ARRIVALS and each N of CALLS_LIST, one run of
# `relay_bench N SECONDS_PER_RUN PORT_BASE [--burst] --threads RELAY_THREADS --batch-us BATCH_US`:
# the relay (its own single-threaded runtimes, one per core as in `kubepbx up` and `kubepbx
# media`, or RELAY_THREADS of them; a busy one wakes once per BATCH_US) anchors N calls, and 2 × N fake phones in the same process send
# 172-byte RTP packets every 20 ms each way (50 pps per direction, 100 pps per call) on
# 127.0.0.1, from one sender thread, received on one tokio worker. The arrivals:
#   even   call i of N sends at i × 20 ms / N into each period (a few packets at a time, like
#          independent phones);
#   burst  the packets due within a millisecond leave together (what tokio timers, 1 ms
#          resolution, produce: 100 packets per millisecond at 1,000 calls). The relay then
#          handles many packets per wake-up, which makes each cheaper.
# WebRTC: then, for each N of WEBRTC_CALLS_LIST, one run with `--webrtc` (even arrivals): every
# caller is a fake browser (a str0m peer: ICE, DTLS, SRTP) calling a plain phone, so the relay
# bridges a WebRTC leg (decrypting and encrypting every packet) and a plain one. The browsers
# share the phones' cores; when they cannot keep up, packets wait in their sockets
# (queue_KiB, phones' side) and the run loses packets that the relay did not drop (drops).
# One core: last, for each N of CORE_CALLS_LIST, one WebRTC run that gives the relay a core of its
# own (`--threads 1 --pin --replay`, even arrivals): one relay thread, pinned to the last CPU,
# every other thread (phones, browsers) to the others; the browsers connect with ICE and DTLS
# as above, then encrypt the packets of their whole run in advance (str0m, the same SRTP) and
# only send them at their turns, counting the relay's packets by their RTP header and handing
# 1 in 50 to str0m to decrypt and authenticate (verified). This is the direct "calls per core"
# measurement: the relay thread's share of its core (relay%) must stay below 100 % with zero
# loss. Its latency is that of the browsers' packets only (browser -> relay -> phone, from
# the planned send time, so late sends count). Needs 2 CPUs or more.
# After 2 s of warm-up it measures over SECONDS_PER_RUN:
#   - loss: packets the phones sent that the other phone did not receive, over the window and
#     over the whole run (senders stopped, 500 ms of drain);
#   - one-way latency phone -> relay -> phone (the send time travels in the payload; same
#     process, same monotonic clock): p50, p99, p99.9, max, in µs; it includes the phones' own
#     scheduling delay on their single thread;
#   - relay CPU per relayed packet: CPU time of the relay's threads (/proc/self/task/*/schedstat,
#     user + kernel, so the recvmmsg/sendto syscalls and the loopback delivery are in it)
#     divided by the packets it relayed (both directions; for WebRTC, the average of a browser's
#     packet and a phone's), and the calls one core carries at that cost:
#     1e6 / (µs per packet × 100 packets/s per call);
#   - memory per call: RSS growth when the phones' sockets are bound (phones' share), when the
#     relay's sessions are created (relay's share), and during traffic (both; socket buffers
#     live in the kernel and are not in RSS);
#   - where packets wait: the most bytes queued in the relay's and in the phones' sockets
#     (/proc/net/udp, sampled every second), to tell a slow relay from slow phones.
# A run during which other processes used more than NOISE_PCT % of a core is marked and run
# again (at most twice). The issue's targets are reported, not asserted: plain RTP at 1,000
# calls with zero loss and at most 5 µs of CPU per relayed packet; WebRTC↔RTP at most 10 µs
# per relayed packet (1,000 calls per core) with zero loss. The last lines put the two side by
# side for each number of calls. The exit status is 0 when every run produced figures, 1 when
# one did not, 2 for errors of this script or its environment.
#
# Environment (defaults in brackets):
#   RELAY_BENCH_BIN    the relay_bench example binary (required; `cargo build --release
#                      -p kubepbx-media --example relay_bench` writes
#                      $CARGO_TARGET_DIR/release/examples/relay_bench)
#   CALLS_LIST         [100 500 1000]   concurrent plain calls per run
#   ARRIVALS           [even burst]     arrival patterns of the plain runs (see above)
#   WEBRTC_CALLS_LIST  [200 500]        concurrent WebRTC↔RTP calls per run (empty: none); on
#                                       2 cores, 1000 saturates the machine (the fake browsers
#                                       need more than a core): packets queue and are lost
#   CORE_CALLS_LIST    [1000]           concurrent WebRTC↔RTP calls of the one-core runs
#                                       (empty: none)
#   RELAY_THREADS      [0]              the relay's threads (0: one per core, as kubepbx runs)
#   BATCH_US           [1000]           how long a busy relay thread gathers packets between
#                                       wake-ups (--media-batch-interval; 1000 = 1ms, the
#                                       default of kubepbx up and kubepbx media; 0: wake for
#                                       every packet)
#   SECONDS_PER_RUN    [10]             measurement window of each run
#   PORT_BASE          [22000]          the relay's ports are PORT_BASE … PORT_BASE + 4 × N + 99
#                                       (below the kernel's ephemeral range, where the phones'
#                                       sockets come from)
#   NOISE_PCT          [25]
#   BENCH_WORK         [a new /tmp/kubepbx-relay.XXXXXX]  the runs' output; a directory given
#                      here is kept, the default one is deleted after a successful run unless
#                      BENCH_KEEP=1
# Helpers shared with the other benchmarks are in tests/bench/lib.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
kept_note="work files"

CALLS_LIST=${CALLS_LIST-100 500 1000}
ARRIVALS=${ARRIVALS:-even burst}
WEBRTC_CALLS_LIST=${WEBRTC_CALLS_LIST-200 500}
CORE_CALLS_LIST=${CORE_CALLS_LIST-1000}
RELAY_THREADS=${RELAY_THREADS:-0}
BATCH_US=${BATCH_US:-1000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PORT_BASE=${PORT_BASE:-22000}
NOISE_PCT=${NOISE_PCT:-25}
BENCH_KEEP=${BENCH_KEEP:-0}

for cmd in python3 getconf; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found"
done
[ -n "${RELAY_BENCH_BIN:-}" ] || die "RELAY_BENCH_BIN is not set (make bench sets it; build it with: cargo build --release -p kubepbx-media --example relay_bench)"
[ -x "$RELAY_BENCH_BIN" ] || die "RELAY_BENCH_BIN=$RELAY_BENCH_BIN is not an executable"
for a in $ARRIVALS; do
  case $a in even | burst) ;; *) die "ARRIVALS: unknown pattern $a (even, burst)" ;; esac
done
for n in "$SECONDS_PER_RUN" "$PORT_BASE" "$NOISE_PCT" "$RELAY_THREADS" "$BATCH_US"; do
  [[ $n =~ ^[0-9]+$ ]] || die "not a number: $n"
done
for n in $CALLS_LIST $WEBRTC_CALLS_LIST $CORE_CALLS_LIST; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "CALLS_LIST, WEBRTC_CALLS_LIST, CORE_CALLS_LIST: not a positive number: $n"
  [ $((PORT_BASE + 4 * n + 99)) -le 65535 ] || die "PORT_BASE + 4 x $n + 99 is above 65535"
done
[ -n "$CALLS_LIST$WEBRTC_CALLS_LIST$CORE_CALLS_LIST" ] || die "CALLS_LIST, WEBRTC_CALLS_LIST and CORE_CALLS_LIST are all empty"
if [ -n "$CORE_CALLS_LIST" ] && [ "$NCPU" -lt 2 ]; then
  die "CORE_CALLS_LIST needs 2 CPUs or more (the relay gets one of its own); set it empty"
fi
command -v taskset >/dev/null 2>&1 || [ -z "$CORE_CALLS_LIST" ] || die "taskset (util-linux) not found: the one-core runs need it"
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range

init_work kubepbx-relay relay-results.txt

row() { printf '%-6s %-6s %6s %7s %8s %8s %8s %5s %5s %6s %6s %9s %6s %6s %7s %8s %8s %14s %11s %6s  %s\n' "$@"; }
TABLE_HEADER=$(row mode arrive calls pps relayed received lost_win lost drops relay% us/pkt calls/core phone% p50_us p99_us p99.9_us max_us KiB/call queue_KiB other% verdict)

# calls_per_core US: the calls one core carries at US µs of CPU per packet, 100 packets/s each.
calls_per_core() { python3 -c 'import sys; print("%.0f" % (1e6 / (float(sys.argv[1]) * 100)))' "$1"; }

declare -A res=() summary=()
# run MODE ARRIVALS N TRY: one run (MODE plain, webrtc or core); fills res[] from its RESULT line,
# prints the row, records the figure for the summary; returns 1 when noisy.
run() {
  local mode=$1 arrivals=$2 n=$3 try=$4 out=$WORK/relay-$1-$2-$3.$4.out rc=0 s0 s1 m0 m1 other verdict kv bench per_core target
  local -a flags=(--threads "$RELAY_THREADS" --batch-us "$BATCH_US")
  [ "$arrivals" = even ] || flags+=(--burst)
  [ "$mode" != webrtc ] || flags+=(--webrtc)
  [ "$mode" != core ] || flags=(--threads 1 --pin --replay --batch-us "$BATCH_US")
  local -a j0 j1
  children_cpu
  s0=$children_ms
  read -r -a j0 <<<"$(machine_jiffies)"
  m0=$(date +%s%N)
  "$RELAY_BENCH_BIN" "$n" "$SECONDS_PER_RUN" "$PORT_BASE" "${flags[@]}" >"$out" 2>&1 </dev/null &
  bench=$!
  pids+=("$bench")
  wait "$bench" || rc=$?
  forget_pid "$bench"
  m1=$(date +%s%N)
  read -r -a j1 <<<"$(machine_jiffies)"
  children_cpu
  s1=$children_ms
  if [ "$rc" -ne 0 ] || ! grep -q '^RESULT ' "$out"; then
    log "relay_bench $n ($mode, $arrivals) exited $rc without a result; last lines of $out:"
    tail -n 20 "$out" >&2 || true
    return 2
  fi
  res=()
  local -a pairs
  read -r -a pairs < <(sed -n 's/^RESULT //p' "$out")
  for kv in "${pairs[@]}"; do
    res[${kv%%=*}]=${kv#*=}
  done
  # Everything but relay_bench on the machine during the run, in % of one core.
  other=$(python3 -c '
import sys
jb, jt, ncpu, own_ms, wall_ns = map(int, sys.argv[1:])
busy = jb * 100 / max(jt, 1) * ncpu
own = own_ms / 1000 / max(wall_ns / 1e9, 1e-9) * 100
print("%.0f" % max(busy - own, 0))
' "$((j1[0] - j0[0]))" "$((j1[1] - j0[1]))" "$NCPU" "$((s1 - s0))" "$((m1 - m0))")
  res[other]=$other
  per_core=$(calls_per_core "${res[cpu_us_per_packet]}")
  target=$([ "$mode" = plain ] && echo 5 || echo 10)
  verdict="loss ${res[lost_total]}$([ "${res[lost_total]}" = 0 ] && echo " (target 0: met)" || echo " (target 0: NOT met)")"
  verdict+=", $(python3 -c 'import sys; t = sys.argv[2]; print(f"<= {t} us: met" if float(sys.argv[1]) <= float(t) else f"<= {t} us: NOT met")' "${res[cpu_us_per_packet]}" "$target")"
  if [ "$mode" = core ]; then
    verdict+=", its core $(python3 -c 'import sys; print("< 100 %: met" if float(sys.argv[1]) < 100 else ">= 100 %: NOT met")' "${res[relay_cpu_pct]}")"
    verdict+=", ${res[verified]} decrypted by the browsers"
    [ "${res[replay_short]}" = 0 ] || verdict+=", ${res[replay_short]} sends with no prepared packet"
  fi
  if [ "$other" -gt "$NOISE_PCT" ]; then
    verdict+="; other load on the machine"
  fi
  summary[$mode/$arrivals/$n]="${res[cpu_us_per_packet]} us ($per_core/core, lost ${res[lost_total]})"
  [ "$mode" != core ] || summary[$mode/$arrivals/$n]="${res[cpu_us_per_packet]} us (${res[relay_cpu_pct]} % of it, lost ${res[lost_total]})"
  row "$mode" "$arrivals" "$n" "${res[pps]}" "${res[relayed]}" "${res[received]}" "${res[lost_window]}" "${res[lost_total]}" \
    "${res[relay_dropped]}" "${res[relay_cpu_pct]}" "${res[cpu_us_per_packet]}" "$per_core" "${res[phones_cpu_pct]}" \
    "${res[p50_us]}" "${res[p99_us]}" "${res[p999_us]}" "${res[max_us]}" \
    "${res[relay_kib_per_call]}/${res[phones_kib_per_call]}/${res[traffic_kib_per_call]}" \
    "${res[relay_queue_max_kib]}/${res[phones_queue_max_kib]}" "$other" "$verdict" |
    tee -a "$RESULTS"
  [ "$other" -le "$NOISE_PCT" ] || [ "$try" -ge 3 ] || return 1
}

{
  echo "kubepbx media relay benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "relay_bench: $RELAY_BENCH_BIN; ${SECONDS_PER_RUN} s windows; relay threads: $([ "$RELAY_THREADS" = 0 ] && echo "one per core ($NCPU)" || echo "$RELAY_THREADS") (core runs: one, pinned), batching wake-ups in ${BATCH_US} us once busy; relay ports from $PORT_BASE; ephemeral ports $eph_lo-$eph_hi"
  machine_lines
  echo "columns: mode = plain (phone to phone), webrtc (browser to phone: a WebRTC leg and a plain leg) or"
  echo "  core (webrtc on one relay thread pinned to a CPU of its own, the browsers replaying packets"
  echo "  encrypted in advance; everything else on the other CPUs);"
  echo "  arrive = arrival pattern (even: spread over each 20 ms; burst: grouped per millisecond);"
  echo "  pps = RTP packets relayed per second (both directions); relayed, received = packets in the"
  echo "  window; lost_win = sent - received in the window (sampled at slightly different instants, can be"
  echo "  negative); lost = sent - received over the whole run after a 500 ms drain; drops = packets the relay"
  echo "  dropped; relay% / phone% = CPU of the relay's / the phones' (and browsers') threads in % of one core;"
  echo "  us/pkt = relay CPU per relayed packet; calls/core = 1e6 / (us/pkt x 100 packets/s per call);"
  echo "  p50_us … max_us = one-way latency phone -> relay -> phone (or browser; core: browser -> phone"
  echo "  only, from the planned send times); KiB/call = RSS growth per call for the relay's sessions (core:"
  echo "  and the browsers' packets prepared in advance) / the phones' sockets / during traffic; queue_KiB = most"
  echo "  bytes waiting in the relay's / the phones' socket receive queues (sampled every second); other% ="
  echo "  the rest of the machine in % of one core"
  echo
  echo "$TABLE_HEADER"
} | tee -a "$RESULTS"

failed=()
# series MODE ARRIVALS N...: a run per N, repeated (up to 3 tries) while the machine is busy.
series() {
  local mode=$1 arrivals=$2 n try rc
  shift 2
  for n in "$@"; do
    for try in 1 2 3; do
      rc=0
      run "$mode" "$arrivals" "$n" "$try" || rc=$?
      case $rc in
        0) break ;;
        1)
          log "other processes were busy during that run: repeating it in 5 s"
          sleep 5
          ;;
        *)
          failed+=("$n/$mode/$arrivals")
          break
          ;;
      esac
    done
  done
}
for arrivals in $ARRIVALS; do
  # shellcheck disable=SC2086 # word splitting of the list is wanted
  series plain "$arrivals" $CALLS_LIST
done
# shellcheck disable=SC2086
series webrtc even $WEBRTC_CALLS_LIST
# shellcheck disable=SC2086
series core even $CORE_CALLS_LIST

{
  echo
  echo "relay CPU per relayed packet, calls per core at that cost, and loss, by number of calls:"
  printf '%-6s' calls
  for arrivals in $ARRIVALS; do
    [ -z "$CALLS_LIST" ] || printf '  %-32s' "plain, $arrivals arrivals"
  done
  [ -z "$WEBRTC_CALLS_LIST" ] || printf '  %-32s' "webrtc<->rtp, even arrivals"
  [ -z "$CORE_CALLS_LIST" ] || printf '  %-32s' "webrtc<->rtp, one pinned core"
  echo
  # shellcheck disable=SC2086
  for n in $(printf '%s\n' $CALLS_LIST $WEBRTC_CALLS_LIST $CORE_CALLS_LIST | sort -n -u); do
    printf '%-6s' "$n"
    for arrivals in $ARRIVALS; do
      [ -z "$CALLS_LIST" ] || printf '  %-32s' "${summary[plain/$arrivals/$n]:--}"
    done
    [ -z "$WEBRTC_CALLS_LIST" ] || printf '  %-32s' "${summary[webrtc/even/$n]:--}"
    [ -z "$CORE_CALLS_LIST" ] || printf '  %-32s' "${summary[core/even/$n]:--}"
    echo
  done
  echo "targets: plain <= 5 us per packet with 0 lost at 1,000 calls; webrtc<->rtp <= 10 us (1,000 calls per core) with 0 lost;"
  echo "  one pinned core: 1,000 webrtc<->rtp calls with 0 lost and the relay thread below 100 % of its core"
} | tee -a "$RESULTS"

if [ ${#failed[@]} -gt 0 ]; then
  echo "no figures for: ${failed[*]} (calls/mode/arrivals; see $WORK)" | tee -a "$RESULTS"
  status=1
else
  status=0
fi
exit "$status"
