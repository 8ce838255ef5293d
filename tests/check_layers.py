#!/usr/bin/python3
"""The layering rule of proxy/README.md, checked.

Every `#include "..."` in certs/, policy/ and proxy/<layer>/ is an edge from
the including file's layer to the included header's layer. An edge is
allowed inside one layer, or downward:

    cli -> {server, control, inject} -> gate -> {http1, http2, upstream}
        -> core -> base -> policy -> certs

Layers on one line in braces are siblings: neither may use the other.

With --objects DIR (a build directory), the same rule is checked on what the
code calls: every undefined symbol of a library object is looked up among the
defined symbols of all objects (nm), and the edge from the caller's layer to
the definer's must be allowed too; so a forward declaration cannot hide an
upward call.

Exit status 0 when the tree follows the rule, 1 with one line per offending
edge (file, line, what it uses), 2 on a usage error.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# layer -> rank; same rank = siblings
RANK = {
    "certs": 0, "policy": 1, "base": 2, "core": 3,
    "http1": 4, "http2": 4, "upstream": 4,
    "gate": 5,
    "server": 6, "control": 6, "inject": 6,
    "cli": 7,
}

# CMake object folders of the libraries (CMakeLists.txt)
LIBRARY_DIRS = {"certs.dir", "policy.dir"} | {"px_%s.dir" % l for l in RANK
                                              if l not in ("certs", "policy")}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path):
    rel = os.path.relpath(path, ROOT).split(os.sep)
    if rel[0] in ("certs", "policy"):
        return rel[0]
    if rel[0] == "proxy" and len(rel) > 2 and rel[1] in RANK:
        return rel[1]
    return None


def allowed(src, dst):
    if src == dst:
        return True
    return RANK[dst] < RANK[src]


def sources():
    out = []
    for top in ("certs", "policy", "proxy"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".c", ".h")):
                    out.append(os.path.join(d, f))
    return sorted(out)


def check_includes(files, errors):
    headers = {}
    for f in files:
        if f.endswith(".h"):
            headers.setdefault(os.path.basename(f), []).append(f)
    stray = [f for f in files if layer_of(f) is None]
    for f in stray:
        errors.append("%s: not in a layer folder" % os.path.relpath(f, ROOT))
    for f in files:
        src = layer_of(f)
        if src is None:
            continue
        text = open(f, encoding="utf-8", errors="replace").read()
        for m in INCLUDE.finditer(text):
            name = m.group(1)
            local = os.path.join(os.path.dirname(f), name)
            if os.path.exists(local):
                target = local
            else:
                cands = headers.get(os.path.basename(name), [])
                if len(cands) > 1:
                    errors.append("%s: \"%s\" is ambiguous (%s)" % (
                        os.path.relpath(f, ROOT), name,
                        ", ".join(os.path.relpath(c, ROOT) for c in cands)))
                    continue
                if not cands:
                    continue  # not ours (a system or library header)
                target = cands[0]
            dst = layer_of(target)
            if dst is not None and not allowed(src, dst):
                line = text.count("\n", 0, m.start()) + 1
                errors.append("%s:%d: %s includes %s (%s): %s may not use %s" % (
                    os.path.relpath(f, ROOT), line, src, os.path.relpath(target, ROOT),
                    dst, src, dst))


def nm_all(paths, defined):
    """{object path: [symbols]} from one nm run over all of them."""
    args = ["nm", "-A"] + (["--defined-only", "-g"] if defined else ["-u"]) + paths
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    syms = {p: [] for p in paths}
    for line in out.splitlines():
        path, _, rest = line.partition(":")
        parts = rest.split()
        if defined and len(parts) >= 3 and parts[1] in "TDBRCV":
            syms[path].append(parts[2])
        elif not defined and len(parts) >= 2 and parts[0] == "U":
            syms[path].append(parts[1])
    return syms


def check_objects(build, errors):
    objs = []
    for d, _, files in os.walk(build):
        for f in files:
            if not f.endswith(".c.o"):
                continue
            # CMakeFiles/<target>.dir/<path under the source root>.c.o
            full = os.path.join(d, f)
            rel = os.path.relpath(full, build).split(os.sep)
            try:
                i = next(k for k, p in enumerate(rel) if p.endswith(".dir"))
            except StopIteration:
                continue
            if rel[i] not in LIBRARY_DIRS:
                continue  # tests, tools, or a stale target of an older tree
            srcrel = os.sep.join(rel[i + 1:])[:-2]
            src = os.path.join(ROOT, srcrel)
            if os.path.exists(src) and layer_of(src) is not None:
                objs.append((src, full))
    print("check_layers: %d library objects" % len(objs))
    if not objs:
        errors.append("%s: no library objects found (build it first)" % build)
        return
    paths = [o for _, o in objs]
    defs, undefs = nm_all(paths, True), nm_all(paths, False)
    definer = {}
    for src, o in objs:
        for s in defs[o]:
            definer.setdefault(s, src)
    for src, o in objs:
        a = layer_of(src)
        for s in undefs[o]:
            d = definer.get(s)
            if d is None:
                continue
            b = layer_of(d)
            if not allowed(a, b):
                errors.append("%s: %s calls %s (%s, %s): %s may not use %s" % (
                    os.path.relpath(src, ROOT), a, s, os.path.relpath(d, ROOT), b, a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", metavar="BUILD_DIR",
                    help="also check the symbols the built objects use")
    args = ap.parse_args()
    errors = []
    check_includes(sources(), errors)
    if args.objects:
        check_objects(args.objects, errors)
    seen = set()
    for e in errors:
        if e not in seen:
            seen.add(e)
            print(e)
    if errors:
        print("check_layers: %d edge(s) against the layering (proxy/README.md)" % len(seen))
        return 1
    print("check_layers: the tree follows the layering")
    return 0


if __name__ == "__main__":
    sys.exit(main())
