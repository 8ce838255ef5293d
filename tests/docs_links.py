#!/usr/bin/python3
"""docs_links: every relative link in the repository's Markdown files points at
something that exists, and every #anchor at a heading of the file it names.

The reference lives beside the code (README.md is the front door; certs/,
policy/, proxy/, deploy/ and tests/ each have a README.md), so a moved section
or a renamed heading must not leave a link pointing at nothing. Anchors follow
GitHub's rule: the heading text lowercased, punctuation other than '-' and '_'
dropped, spaces turned into '-', and '-1', '-2', ... for repeated headings.

Usage: docs_links.py [REPO_ROOT]   (default: the parent of this file's folder)
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def md_files():
    for d, dirs, files in os.walk(ROOT):
        # skip VCS data and build trees (any folder with a CMakeCache.txt)
        dirs[:] = sorted(x for x in dirs if x != ".git" and not x.startswith(".")
                         and not os.path.exists(os.path.join(d, x, "CMakeCache.txt")))
        for f in sorted(files):
            if f.endswith(".md"):
                yield os.path.join(d, f)


def strip_code(text):
    """Lines outside ``` fences, with inline code spans blanked."""
    out, fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fence = not fence
            out.append("")
            continue
        out.append("" if fence else re.sub(r"`[^`]*`", "``", line))
    return out


def slug(heading):
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen, out = {}, set()
        text = open(path, encoding="utf-8").read()
        fence = False
        for line in text.split("\n"):
            if line.lstrip().startswith("```"):
                fence = not fence
                continue
            m = None if fence else re.match(r"#{1,6} +(.*?) *#* *$", line)
            if m:
                s = slug(m.group(1))
                n = seen.get(s, 0)
                seen[s] = n + 1
                out.add(s if n == 0 else "%s-%d" % (s, n))
        _anchors[path] = out
    return _anchors[path]


def main():
    fails, nlinks, nfiles = [], 0, 0
    for path in md_files():
        nfiles += 1
        rel = os.path.relpath(path, ROOT)
        for lineno, line in enumerate(strip_code(open(path, encoding="utf-8").read()), 1):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                    continue
                nlinks += 1
                file_part, _, anchor = target.partition("#")
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
                    if file_part else path
                if not os.path.exists(dest):
                    fails.append("%s:%d: %s: no such file %s"
                                 % (rel, lineno, target, os.path.relpath(dest, ROOT)))
                    continue
                if anchor and dest.endswith(".md") and anchor not in anchors(dest):
                    fails.append("%s:%d: %s: no heading with anchor #%s in %s"
                                 % (rel, lineno, target, anchor, os.path.relpath(dest, ROOT)))
    for f in fails:
        print("FAIL " + f)
    print("%d relative links in %d Markdown files, %d broken" % (nlinks, nfiles, len(fails)))
    if nlinks == 0:
        print("FAIL no links found: the scan itself is broken")
        return 1
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
