#!/usr/bin/python3
"""Every refusal reason picket can log is documented.

Reads the reason list (PX_REASONS in proxy/base/reason.h: the one place a
reason name is defined) and fails for each name that appears as `name` in
none of the reference docs (proxy/README.md, certs/README.md). Exit 0 when
all are documented, 1 otherwise (one line per missing name), 2 on usage.

usage: docs_reasons.py [REPO_ROOT]
"""
import glob
import os
import re
import sys


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    hdr = glob.glob(os.path.join(root, "proxy", "**", "reason.h"), recursive=True)
    if len(hdr) != 1:
        print("docs_reasons: expected one proxy/**/reason.h, found %d" % len(hdr))
        return 2
    names = [n for n in re.findall(r'X\([A-Z][A-Z_0-9]*, "([a-z_0-9]*)"\)', open(hdr[0]).read())
             if n]
    if len(names) < 50:
        print("docs_reasons: only %d reasons read from %s" % (len(names), hdr[0]))
        return 2
    docs = ""
    for d in ("proxy/README.md", "certs/README.md"):
        docs += open(os.path.join(root, d), encoding="utf-8").read()
    missing = [n for n in names if "`%s`" % n not in docs]
    for n in missing:
        print("docs_reasons: reason %s (%s) is not documented in proxy/README.md or "
              "certs/README.md" % (n, os.path.relpath(hdr[0], root)))
    if missing:
        return 1
    print("docs_reasons: %d reasons, all documented" % len(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
