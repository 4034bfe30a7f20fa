#!/usr/bin/env python3
"""Summarises sipp statistics files (-trace_stat -stf FILE) for tests/bench/calls.sh.

    calls_stat.py uac FILE...     callers of one step (one file per sipp instance, in parallel)
    calls_stat.py uas FILE...     callees (long-running sipp server instances)

uac prints one line summed over the files, from the last (cumulative) row of each:
    outgoing successful failed retransmissions elapsed_s create_s setup_ms call_ms failures
  elapsed_s  the longest CurrentTime - StartTime (sipp's start to its last dump, written when
             its last call ended);
  create_s   the longest elapsed_s - CallLength(C) of a file: the time sipp spent starting its
             calls (the last call started about one mean call length before the end), so
             outgoing / create_s is the call rate the instances achieved together;
  setup_ms   ResponseTimesetup(C) (first INVITE sent -> 200 received, both legs of the
             challenge) averaged over the successful calls of all files;
  call_ms    CallLength(C) averaged the same way (first INVITE -> 200 for the BYE);
  failures   the non-zero Failed*(C) counters as name=count,… ("-" when none).
uas prints: incoming successful failed retransmissions failures (same meaning, summed).
Exits 1 when a file has no data.
"""

import sys


def epoch(cell):
    # "2026-11-21\t09:04:34.528907\t1795251874.528907": the last tab-separated part.
    return float(cell.split("\t")[-1])


def duration_ms(cell):
    # "HH:MM:SS:uuuuuu"
    h, m, s, us = (int(x) for x in cell.split(":"))
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def last_row(path):
    with open(path) as f:
        rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    if len(rows) < 2:
        raise ValueError("%s: no statistics rows" % path)
    return dict(zip(rows[0], rows[-1]))


def failures(rows):
    counts = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)":
                n = int(value or 0)
                if n:
                    name = key[len("Failed") : -len("(C)")]
                    counts[name] = counts.get(name, 0) + n
    return ",".join("%s=%d" % kv for kv in sorted(counts.items())) or "-"


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("uac", "uas"):
        sys.exit(__doc__)
    mode, paths = sys.argv[1], sys.argv[2:]
    try:
        rows = [last_row(p) for p in paths]
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    ok = sum(int(r["SuccessfulCall(C)"]) for r in rows)
    failed = sum(int(r["FailedCall(C)"]) for r in rows)
    retrans = sum(int(r["Retransmissions(C)"]) for r in rows)
    if mode == "uas":
        incoming = sum(int(r["IncomingCall(C)"]) for r in rows)
        print("%d %d %d %d %s" % (incoming, ok, failed, retrans, failures(rows)))
        return 0
    out = sum(int(r["OutgoingCall(C)"]) for r in rows)
    elapsed = create = setup = length = 0.0
    for r in rows:
        n = int(r["SuccessfulCall(C)"])
        e = epoch(r["CurrentTime"]) - epoch(r["StartTime"])
        call_ms = duration_ms(r["CallLength(C)"])
        elapsed = max(elapsed, e)
        create = max(create, e - call_ms / 1000)
        setup += n * duration_ms(r["ResponseTimesetup(C)"])
        length += n * call_ms
    print(
        "%d %d %d %d %.3f %.3f %.1f %.1f %s"
        % (
            out,
            ok,
            failed,
            retrans,
            elapsed,
            max(create, 1e-3),
            setup / ok if ok else 0,
            length / ok if ok else 0,
            failures(rows),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
