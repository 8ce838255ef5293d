#!/usr/bin/python3
"""docs_config_keys: every config key the parser accepts has a row in the
config reference (proxy/README.md, "## Config reference"), and every key that
reference documents is one the parser accepts.

The keys come from the parser itself: proxy/config.c checks each JSON object
against a NULL-terminated array (`static const char *const keys[] = {...}`,
`in_keys`, `out_keys`) inside the function that parses that section. Each such
array is mapped to its section by the function it sits in: parse_<name> is
section <name>, and the few others are named in SECTION_OF below. An array in a
function this script cannot map is a failure, not a skip, so a new section
cannot go unchecked. The file is found by searching under proxy/ (it may move
into a subfolder), and every proxy/**/config*.c is read.

A key is written as in the reference: `limits.memory_budget`,
`listeners[].trusted_forwarders`, `dispatch.NAME.timeout`,
`listeners[].routes[].server_id`, top-level keys bare (`node_id`). A key that
only holds a section (`identity`, `listeners`, `listeners[].routes`) needs no
row of its own: its section's keys are checked instead.

Usage: docs_config_keys.py [REPO_ROOT]   (default: the parent of this file's folder)
"""
import glob
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# function -> section, where "parse_<section>" does not say it
SECTION_OF = {
    "parse_root": "",
    "parse_dispatch_one": "dispatch.NAME",
    "parse_listener": "listeners[]",
    "parse_route": "listeners[].routes[]",
    "parse_probe_target": "probes.targets.NAME",
}
# the extraction is broken if it finds less than this
MIN_SECTIONS, MIN_KEYS = 10, 60


def fail(msg):
    print("FAIL " + msg)
    return 1


def parser_keys():
    """{section: set(keys)} from every proxy/**/config*.c."""
    files = sorted(glob.glob(os.path.join(ROOT, "proxy", "**", "config*.c"), recursive=True))
    if not any(os.path.basename(f) == "config.c" for f in files):
        raise SystemExit(fail("no config.c under %s/proxy" % ROOT))
    sections, errors = {}, []
    for path in files:
        src = open(path, encoding="utf-8").read()
        # function definitions start at column 0: "static int parse_x(" or "int px_x("
        funcs = [(m.start(), m.group(1)) for m in
                 re.finditer(r"^(?:static\s+)?[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{]*?\)\s*\{",
                             src, re.M)]
        for m in re.finditer(r"static\s+const\s+char\s*\*\s*const\s+(\w*keys)\s*\[\s*\]\s*=\s*\{(.*?)\}\s*;",
                             src, re.S):
            fn = None
            for start, name in funcs:
                if start < m.start():
                    fn = name
            line = src.count("\n", 0, m.start()) + 1
            where = "%s:%d" % (os.path.relpath(path, ROOT), line)
            if fn is None:
                errors.append("%s: %s[] outside any function" % (where, m.group(1)))
                continue
            if fn in SECTION_OF:
                sec = SECTION_OF[fn]
            elif fn.startswith("parse_"):
                sec = fn[len("parse_"):]
            else:
                errors.append("%s: %s[] in %s(): which config section is that? "
                              "Add it to SECTION_OF in %s" % (where, m.group(1), fn, __file__))
                continue
            keys = re.findall(r'"([^"\\]*)"', m.group(2))
            if not keys:
                errors.append("%s: %s[] in %s() has no keys" % (where, m.group(1), fn))
            print("%s: %s[] in %s() -> %s (%d keys)"
                  % (where, m.group(1), fn, sec or "top level", len(keys)))
            sections.setdefault(sec, set()).update(keys)
    for e in errors:
        fail(e)
    if errors:
        raise SystemExit(1)
    return sections


def reference_keys():
    """Backticked names in the first column of the config reference table."""
    path = os.path.join(ROOT, "proxy", "README.md")
    text = open(path, encoding="utf-8").read()
    m = re.search(r"^## Config reference\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not m:
        raise SystemExit(fail("proxy/README.md has no '## Config reference' section"))
    out = {}
    for line in m.group(1).split("\n"):
        cells = line.split("|")
        if not line.startswith("|") or len(cells) < 3 or re.match(r"\s*-+\s*$", cells[1]):
            continue
        for k in re.findall(r"`([^`]+)`", cells[1]):
            out[k] = line
    if not out:
        raise SystemExit(fail("no table rows in proxy/README.md's config reference"))
    return out


def main():
    sections = parser_keys()
    documented = reference_keys()
    full = set()
    for sec, keys in sections.items():
        for k in keys:
            full.add(k if sec == "" else sec + "." + k)
    # a key that holds a section: "identity" (identity.*), "dispatch" (dispatch.NAME.*),
    # "listeners" (listeners[].*), "listeners[].routes" (listeners[].routes[].*)
    def holds_section(name):
        return any(s == name or s.startswith(name + ".") or s == name + "[]"
                   or s.startswith(name + "[].") for s in sections if s)
    containers = {k for k in full if holds_section(k)}
    leaves = full - containers
    nkeys = sum(len(v) for v in sections.values())
    print("parser: %d sections, %d keys (%d that hold a section); reference: %d keys"
          % (len(sections), nkeys, len(containers), len(documented)))
    rc = 0
    if len(sections) < MIN_SECTIONS or nkeys < MIN_KEYS:
        rc = fail("found only %d sections / %d keys in proxy/**/config*.c (expected at least "
                  "%d / %d): the extraction is broken" % (len(sections), nkeys, MIN_SECTIONS, MIN_KEYS))
    for k in sorted(leaves):
        if k not in documented:
            rc = fail("config key `%s` is accepted by the parser but has no row in "
                      "proxy/README.md's config reference" % k)
    allowed = leaves | containers | {c + "[]" for c in containers}
    for k in sorted(documented):
        if k not in allowed:
            rc = fail("the config reference documents `%s`, which the parser does not accept" % k)
    if rc == 0:
        print("ok: every key the parser accepts is documented, and only those")
    return rc


if __name__ == "__main__":
    sys.exit(main())
