#!/usr/bin/env python3
"""Writes a sipp injection CSV for register_digest.xml and friends.

    gen_users.py COUNT [--first 1001] [--password-format 'change-me-{user}'] [-o users.csv]

Each line is `user;password;[authentication username=user password=password]` (see the comment
in register_digest.xml for why the keyword is a field). The default password format matches
kubepbx_tests::manifests::default_password and examples/ext-1001.yaml.
"""

import argparse
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("count", type=int)
    ap.add_argument("--first", type=int, default=1001)
    ap.add_argument("--password-format", default="change-me-{user}")
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    out = sys.stdout if a.output == "-" else open(a.output, "w")
    out.write("SEQUENTIAL\n")
    for user in range(a.first, a.first + a.count):
        pw = a.password_format.format(user=user)
        if any(c in pw for c in "; ]\n"):
            ap.error("password %r contains a character sipp cannot take (';', ']', space)" % pw)
        out.write("%d;%s;[authentication username=%d password=%s]\n" % (user, pw, user, pw))
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
