#!/usr/bin/env python3
"""Registers one account with pjsua2 (pip package pjsua2-python, the pjsip stack MicroSIP is built
on), stays registered for a while, then unregisters.

    pjsua2_register.py --registrar 127.0.0.1:5060 --user 1001 --password change-me-1001 \
        [--domain pbx.example.com] [--transport udp|tcp] [--stay SECONDS]

Prints `pjsua2: registration state CODE REASON` for every state change and `pjsua2: registered`
once a 200 arrives; then keeps the registration for --stay seconds (default 0), unregisters and
exits 0. Exits 1 when the registration fails (the last state line says how) or after 20 s.
The registrar address is the outbound proxy and pjsip's resolver points at 127.0.0.1, so nothing
is looked up in DNS and no packet leaves loopback. No sound device is opened.
"""

import argparse
import sys
import time

import pjsua2 as pj


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.code = None

    def onRegState(self, prm):
        self.code = prm.code
        print("pjsua2: registration state %d %s" % (prm.code, prm.reason), flush=True)


def pump(ep, seconds):
    end = time.time() + seconds
    while time.time() < end:
        ep.libHandleEvents(50)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registrar", required=True, help="host:port of the PBX")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--domain", default="pbx.example.com")
    ap.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument("--stay", type=float, default=0.0)
    a = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.nameserver.append("127.0.0.1")
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    ttype = pj.PJSIP_TRANSPORT_UDP if a.transport == "udp" else pj.PJSIP_TRANSPORT_TCP
    ep.transportCreate(ttype, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    print("pjsua2: pjsip %s" % ep.libVersion().full, flush=True)

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:%s@%s" % (a.user, a.domain)
    acfg.regConfig.registrarUri = "sip:%s" % a.domain
    acfg.sipConfig.proxies.append("sip:%s;transport=%s;lr" % (a.registrar, a.transport))
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", a.user, 0, a.password))
    acc = Account()
    acc.create(acfg)

    ok = False
    deadline = time.time() + 20
    while time.time() < deadline:
        ep.libHandleEvents(50)
        if acc.code is not None and acc.code != 401:
            ok = acc.code == 200
            break
    if ok:
        print("pjsua2: registered", flush=True)
        pump(ep, a.stay)
        acc.setRegistration(False)
        pump(ep, 1)
    acc.shutdown()
    ep.libDestroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
