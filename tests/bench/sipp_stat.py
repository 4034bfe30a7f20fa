#!/usr/bin/env python3
"""Summarises sipp statistics files (-trace_stat -stf FILE) for tests/bench/register.sh.

    sipp_stat.py FILE...

One file per sipp instance of a step that ran in parallel. Prints one line from the last
(cumulative) row of each file, summed over the files:
    outgoing successful failed retransmissions elapsed_seconds mean_response_ms
elapsed_seconds is the longest CurrentTime - StartTime of those rows (from sipp's start to its
last dump, written when its last call ended), so outgoing / elapsed_seconds is the rate the
instances achieved together. mean_response_ms is ResponseTimeregister(C) (first REGISTER sent to
200 received), averaged over the successful calls of all files. Exits 1 when a file has no data.
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


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = ok = failed = retrans = 0
    elapsed = weighted_ms = 0.0
    for path in sys.argv[1:]:
        try:
            last = last_row(path)
        except (OSError, ValueError) as e:
            print(e, file=sys.stderr)
            return 1
        n = int(last["SuccessfulCall(C)"])
        out += int(last["OutgoingCall(C)"])
        ok += n
        failed += int(last["FailedCall(C)"])
        retrans += int(last["Retransmissions(C)"])
        elapsed = max(elapsed, epoch(last["CurrentTime"]) - epoch(last["StartTime"]))
        weighted_ms += n * duration_ms(last["ResponseTimeregister(C)"])
    print("%d %d %d %d %.3f %.1f" % (out, ok, failed, retrans, elapsed, weighted_ms / ok if ok else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
