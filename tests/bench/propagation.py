#!/usr/bin/env python3
"""Measures how long a registration takes to reach the other registrar replicas (tests/bench/cluster.sh).

    propagation.py --sip 127.0.0.1:5061,127.0.0.1:5062,… --http 127.0.0.1:8081,127.0.0.1:8082,…
                   --token TOKEN --first 12001 --samples 200 [--domain pbx.example.com]
                   [--password-format 'change-me-{user}'] [--timeout 5] [--csv FILE]

Replica i is reached at the i-th --sip (SIP over UDP) and the i-th --http address (admin API).
Sample k registers user FIRST + k (a user nobody else registers) through replica A over UDP from
one local socket: REGISTER -> 401 -> REGISTER with an MD5 qop=auth digest (password from
--password-format, as tests/bench/gen_manifests.py writes it) -> 200. The moment the 200 arrives
is taken with time.perf_counter_ns(); then replica B (B != A; the samples go round every ordered
pair of replicas) is asked `GET /api/v1/registrations?extension=USER&domain=DOMAIN` over one
keep-alive HTTP connection per replica, again and again without pause, until the binding is
listed. The delay is the arrival of the first answer that lists it minus the arrival of the 200,
so it is known to within one poll round trip (reported). Samples run one after the other.

Prints a human-readable summary and one line
    RESULT samples=N seen=N missing=N p50_ms=… p90_ms=… p99_ms=… max_ms=… first_poll=N
           poll_rtt_p50_ms=… poll_rtt_p99_ms=… register_p50_ms=… sip_failed=N
(on one line; `first_poll` counts the samples already listed at the first poll). A sample not
listed within --timeout seconds counts as missing and as slower than any seen one; a p99 that
falls on a missing sample is printed as `>TIMEOUT_MS`. Exits 0 when every sample registered
(seen or not), 1 when a registration failed, 2 on usage errors. Standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


class Sip:
    """One UDP socket registering users, one transaction at a time."""

    def __init__(self, domain):
        self.domain = domain
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seq = 0

    def request(self, dest, user, call_id, cseq, tag, expires, auth=None):
        self.seq += 1
        branch = "z9hG4bK-prop-%d-%s" % (self.seq, os.urandom(4).hex())
        lines = [
            "REGISTER sip:%s SIP/2.0" % self.domain,
            "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport" % (self.port, branch),
            "Max-Forwards: 70",
            "From: <sip:%s@%s>;tag=%s" % (user, self.domain, tag),
            "To: <sip:%s@%s>" % (user, self.domain),
            "Call-ID: %s" % call_id,
            "CSeq: %d REGISTER" % cseq,
            "Contact: <sip:%s@127.0.0.1:%d;transport=udp>" % (user, self.port),
            "Expires: %d" % expires,
        ]
        if auth:
            lines.append("Authorization: " + auth)
        lines += ["User-Agent: kubepbx-bench-propagation", "Content-Length: 0", "", ""]
        data = "\r\n".join(lines).encode()
        # Over UDP: retransmit every 500 ms until a final response (8 tries).
        for _ in range(8):
            self.sock.sendto(data, dest)
            deadline = time.monotonic() + 0.5
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                try:
                    raw, _ = self.sock.recvfrom(65535)
                except socket.timeout:
                    break
                at = time.perf_counter_ns()
                status, headers = parse_response(raw)
                if headers.get("call-id", [""])[0] != call_id or not headers.get("cseq", [""])[0].startswith("%d " % cseq):
                    continue  # a late retransmission's answer, or another transaction's
                if status < 200:
                    continue
                return status, headers, at
        raise TimeoutError("no final response from %s:%d to REGISTER of %s" % (dest[0], dest[1], user))

    def register(self, dest, user, password, expires):
        """REGISTER -> 401 -> REGISTER with credentials -> 200. Returns (sent_ns, ok_ns)."""
        call_id = "prop-%s-%s@127.0.0.1" % (user, os.urandom(6).hex())
        tag = os.urandom(4).hex()
        sent = time.perf_counter_ns()
        status, headers, _ = self.request(dest, user, call_id, 1, tag, expires)
        if status != 401:
            raise RuntimeError("REGISTER of %s: expected 401, got %d" % (user, status))
        challenge = None
        for value in headers.get("www-authenticate", []):
            scheme, _, rest = value.strip().partition(" ")
            p = dict((k.lower(), a or b) for k, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', rest))
            if scheme.lower() == "digest" and p.get("algorithm", "MD5").upper() == "MD5":
                challenge = p
                break
        if challenge is None:
            raise RuntimeError("REGISTER of %s: no MD5 digest challenge (run the registrars with --digest-challenge md5)" % user)
        realm, nonce = challenge["realm"], challenge["nonce"]
        uri = "sip:%s" % self.domain
        cnonce, nc = os.urandom(8).hex(), "00000001"
        ha1 = md5("%s:%s:%s" % (user, realm, password))
        ha2 = md5("REGISTER:%s" % uri)
        qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
        if "auth" in qops:
            response = md5("%s:%s:%s:%s:auth:%s" % (ha1, nonce, nc, cnonce, ha2))
            auth = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
                    'algorithm=MD5, cnonce="%s", qop=auth, nc=%s' % (user, realm, nonce, uri, response, cnonce, nc))
        else:
            response = md5("%s:%s:%s" % (ha1, nonce, ha2))
            auth = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5'
                    % (user, realm, nonce, uri, response))
        if "opaque" in challenge:
            auth += ', opaque="%s"' % challenge["opaque"]
        status, _, at = self.request(dest, user, call_id, 2, tag, expires, auth)
        if status != 200:
            raise RuntimeError("REGISTER of %s with credentials: expected 200, got %d" % (user, status))
        return sent, at


def parse_response(raw):
    text = raw.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("SIP/"):
        return 0, {}
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        name = {"i": "call-id"}.get(name.strip().lower(), name.strip().lower())
        headers.setdefault(name, []).append(value.strip())
    return int(parts[1]), headers


class Api:
    """One keep-alive connection to one replica's admin API."""

    def __init__(self, host, port, token):
        self.host, self.port = host, port
        self.headers = {"Authorization": "Bearer " + token}
        self.conn = None

    def listed(self, user, domain):
        path = "/api/v1/registrations?extension=%s&domain=%s" % (user, domain)
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                self.conn.request("GET", path, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if resp.status != 200:
                raise RuntimeError("GET %s on %s:%d: %d %s" % (path, self.host, self.port, resp.status, body[:200]))
            return any(b.get("extension") == user for b in json.loads(body))
        return False


def percentile(sorted_values, pct):
    """Nearest rank; None stands for a missing sample (slower than any)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * pct // 100) - 1))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sip", required=True, help="comma-separated HOST:PORT, one per replica")
    ap.add_argument("--http", required=True, help="comma-separated HOST:PORT, one per replica")
    ap.add_argument("--token", required=True)
    ap.add_argument("--first", type=int, required=True, help="first user; sample k registers FIRST + k")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--domain", default="pbx.example.com")
    ap.add_argument("--password-format", default="change-me-{user}")
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a binding to be listed")
    ap.add_argument("--csv", help="write one line per sample here")
    a = ap.parse_args()
    sips = [addr(s) for s in a.sip.split(",")]
    apis = [Api(*addr(s), a.token) for s in a.http.split(",")]
    if len(sips) != len(apis) or len(sips) < 2 or a.samples < 1:
        ap.error("need as many --sip as --http addresses, at least 2, and --samples >= 1")
    pairs = [(x, y) for x in range(len(sips)) for y in range(len(sips)) if x != y]
    sip = Sip(a.domain)
    delays, rtts, regs, rows = [], [], [], []
    missing = first_poll = sip_failed = 0
    for k in range(a.samples):
        src, dst = pairs[k % len(pairs)]
        user = str(a.first + k)
        try:
            sent, ok_at = sip.register(sips[src], user, a.password_format.format(user=user), a.expires)
        except (RuntimeError, TimeoutError, OSError) as e:
            print("sample %d: %s" % (k, e), file=sys.stderr)
            sip_failed += 1
            rows.append((k, user, src, dst, "", "", "register failed"))
            continue
        regs.append((ok_at - sent) / 1e6)
        polls, seen_at, deadline = 0, None, ok_at + int(a.timeout * 1e9)
        while True:
            t0 = time.perf_counter_ns()
            found = apis[dst].listed(user, a.domain)
            t1 = time.perf_counter_ns()
            rtts.append((t1 - t0) / 1e6)
            polls += 1
            if found:
                seen_at = t1
                break
            if t1 > deadline:
                break
        if seen_at is None:
            missing += 1
            rows.append((k, user, src, dst, "", polls, "not listed within %.1f s" % a.timeout))
            continue
        if polls == 1:
            first_poll += 1
        delays.append((seen_at - ok_at) / 1e6)
        rows.append((k, user, src, dst, "%.3f" % delays[-1], polls, ""))

    if a.csv:
        with open(a.csv, "w") as f:
            f.write("sample,user,replica_a,replica_b,delay_ms,polls,note\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")

    timeout_ms = a.timeout * 1000
    ranked = sorted(delays) + [None] * missing

    def fmt(v):
        return ">%.0f" % timeout_ms if v is None else "%.1f" % v

    def p(values, pct):
        v = percentile(values, pct)
        return fmt(v) if values else "n/a"

    registered = a.samples - sip_failed
    rtts.sort()
    regs.sort()
    result = {
        "samples": a.samples,
        "seen": len(delays),
        "missing": missing,
        "p50_ms": p(ranked, 50),
        "p90_ms": p(ranked, 90),
        "p99_ms": p(ranked, 99),
        "max_ms": p(ranked, 100),
        "first_poll": first_poll,
        "poll_rtt_p50_ms": "%.2f" % percentile(rtts, 50) if rtts else "n/a",
        "poll_rtt_p99_ms": "%.2f" % percentile(rtts, 99) if rtts else "n/a",
        "register_p50_ms": "%.2f" % percentile(regs, 50) if regs else "n/a",
        "sip_failed": sip_failed,
    }
    print("%d samples over %d replicas (%d ordered pairs): %d registered, %d listed on the other replica, %d not within %.1f s"
          % (a.samples, len(sips), len(pairs), registered, len(delays), missing, a.timeout))
    print("delay 200 OK on A -> listed on B: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms; listed at the first poll: %d"
          % (result["p50_ms"], result["p90_ms"], result["p99_ms"], result["max_ms"], first_poll))
    print("resolution: one poll round trip, p50 %s ms, p99 %s ms (%d polls); REGISTER -> 200 p50 %s ms"
          % (result["poll_rtt_p50_ms"], result["poll_rtt_p99_ms"], len(rtts), result["register_p50_ms"]))
    print("RESULT " + " ".join("%s=%s" % kv for kv in result.items()))
    return 1 if sip_failed else 0


if __name__ == "__main__":
    sys.exit(main())
