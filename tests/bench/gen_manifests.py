#!/usr/bin/env python3
"""Writes Extension + Secret manifests for `kubepbx up -f DIR` (benchmarks).

    gen_manifests.py COUNT [--first 1001] [--per-file 1000] [--namespace default]
                     [--password-format 'change-me-{user}'] -o DIR

Extension N is named ext-N, has extension "N" and the password "change-me-N" (the same users and
passwords as tests/sipp/gen_users.py, so the two files describe the same population). Each file
holds --per-file Extension/Secret pairs as multi-document YAML. DIR is created; existing
ext-*.yaml files in it are removed first so a rerun with a smaller COUNT does not leave extra
extensions behind.
"""

import argparse
import os
import sys

TEMPLATE = """\
apiVersion: kubepbx.io/v1alpha1
kind: Extension
metadata: {{name: ext-{user}, namespace: {ns}}}
spec:
  extension: "{user}"
  passwordSecretRef: {{name: ext-{user}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: ext-{user}, namespace: {ns}}}
stringData: {{password: "{password}"}}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("count", type=int)
    ap.add_argument("--first", type=int, default=1001)
    ap.add_argument("--per-file", type=int, default=1000)
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--password-format", default="change-me-{user}")
    ap.add_argument("-o", "--output", required=True, help="directory to write into")
    a = ap.parse_args()
    if a.count < 0 or a.per_file < 1:
        ap.error("COUNT must be >= 0 and --per-file >= 1")
    os.makedirs(a.output, exist_ok=True)
    for name in os.listdir(a.output):
        if name.startswith("ext-") and name.endswith(".yaml"):
            os.remove(os.path.join(a.output, name))
    last = a.first + a.count
    for start in range(a.first, last, a.per_file):
        end = min(start + a.per_file, last)
        path = os.path.join(a.output, "ext-%d-%d.yaml" % (start, end - 1))
        with open(path, "w") as out:
            for user in range(start, end):
                pw = a.password_format.format(user=user)
                if any(c in pw for c in '"\\\n'):
                    ap.error("password %r needs YAML escaping; not supported" % pw)
                if user != start:
                    out.write("---\n")
                out.write(TEMPLATE.format(user=user, ns=a.namespace, password=pw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
