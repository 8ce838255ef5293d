#!/usr/bin/python3
"""man_page: the manual page picket.1 renders cleanly and says what picket does.

picket.1 is made at build time by `picket help --man` from the table that
`picket help` prints (proxy/cli/help.c). This checks, on a built tree:

- the build's picket.1 is what the binary prints now (not a stale page);
- groff (`groff -man -ww`, what `man` runs) and `man -l` render it without a
  warning;
- `picket help`, `picket --help` and `picket -h` print the same text (exit 0),
  and `picket` alone prints it to stderr (exit 2);
- every command `picket help` lists is in the page's SYNOPSIS, COMMANDS and
  EXIT STATUS sections;
- every command and subcommand the sources dispatch on (strcmp against
  argv in proxy/cli/main.c and cmd_<name>.c) is listed by `picket help`;
- every option the subcommands' own usage texts print, and every option
  string the sources of proxy/cli/ compare arguments with, is in the page;
- `cmake --install` puts bin/picket and share/man/man1/picket.1 under a
  prefix.

So a command or an option cannot be added to the code without its line in
help.c, and help.c cannot drop one the page had.

Usage: man_page.py --picket BIN --man PICKET_1 --root REPO_ROOT --build BUILD_DIR [--cmake CMAKE]
Exit status 0 when all hold, 1 with one line per failure.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = []


def fail(msg):
    failures.append(msg)


def run(argv, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, **kw)


def sections(text):
    """Rendered page -> {SECTION NAME: body}; section headings start in column 0."""
    out, name = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("PICKET(1)") \
                and not line.startswith("picket "):
            name = line.strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def flat(s):
    return " ".join(s.split())


def has_word(text, word):
    """word (an option such as --max-wait) appears delimited in text."""
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


def help_commands(help_text):
    """The commands `picket help` lists: the words before the arguments of
    each synopsis line ("cert issue", "inject write-config", "version"),
    indented by 2 (a command of its own) or 4 (one of a group). A group's
    heading, indented by 2, names its subcommands with '|' ("cert
    init|issue|inspect|verify") and is not a command."""
    cmds = []
    # the commands section: from "commands:" to the first blank line
    text = help_text.split("commands:\n", 1)[-1].split("\n\n", 1)[0]
    for line in text.splitlines():
        m = re.match(r"^( {2}| {4})([a-z][a-z-]*(?: [a-z][a-z-]*)*)( |$)", line)
        if not m:
            continue
        rest = line[m.end():].split(" ")
        if len(m.group(1)) == 2 and ("|" in m.group(2) + rest[0] or m.group(3) == "|"):
            continue
        cmds.append(m.group(2))
    return cmds


def source_commands(root):
    """"picket X" for each X main.c dispatches on, "picket X Y" for each Y
    cmd_X.c dispatches on (argv[1] or sub compared with a literal)."""
    cli = os.path.join(root, "proxy", "cli")
    out = []
    main = open(os.path.join(cli, "main.c")).read()
    for w in re.findall(r'strcmp\(argv\[1\], "([a-z][a-z-]*)"\)', main):
        out.append(w)
    for f in sorted(os.listdir(cli)):
        m = re.match(r"cmd_([a-z]+)\.c$", f)
        if not m:
            continue
        src = open(os.path.join(cli, f)).read()
        for w in re.findall(r'strcmp\((?:sub|argv\[1\]), "([a-z][a-z-]*)"\)', src):
            if w != "help":
                out.append("%s %s" % (m.group(1), w))
    return out


def source_options(root):
    """Every "-x" / "--name" string literal in proxy/cli/*.c that is compared
    with an argument (strcmp or px_cli_opt)."""
    cli = os.path.join(root, "proxy", "cli")
    opts = set()
    for f in sorted(os.listdir(cli)):
        if not f.endswith(".c"):
            continue
        src = open(os.path.join(cli, f)).read()
        for m in re.finditer(r'(?:strcmp\([^,]+|px_cli_opt\([^"]+), "(--?[a-z][a-z0-9-]*)"', src):
            opts.add(m.group(1))
    return opts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--picket", required=True)
    ap.add_argument("--man", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--cmake", default="cmake")
    a = ap.parse_args()

    # the page is the binary's
    r = run([a.picket, "help", "--man"])
    if r.returncode != 0 or not r.stdout:
        fail("picket help --man: exit %d, %d bytes" % (r.returncode, len(r.stdout)))
    elif not os.path.exists(a.man):
        fail("%s: missing (the 'man' target makes it)" % a.man)
    elif open(a.man).read() != r.stdout:
        fail("%s differs from `picket help --man` (stale build?)" % a.man)

    # renders without warnings
    groff = shutil.which("groff")
    if groff is None:
        fail("groff not found (Debian package groff-base; deploy/install-deps.sh)")
        return report()
    r = run([groff, "-man", "-ww", "-z", "-Tutf8", a.man])
    if r.returncode != 0 or r.stderr:
        fail("groff -man -ww -Tutf8: exit %d\n%s" % (r.returncode, r.stderr))
    man = shutil.which("man")
    if man is not None:
        r = run([man, "--warnings", "-l", "-P", "cat", a.man],
                env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
        if r.returncode != 0 or r.stderr.strip():
            fail("man -l: exit %d\n%s" % (r.returncode, r.stderr))
    r = run([groff, "-man", "-Tascii", "-P-cbou", a.man])
    page = r.stdout
    secs = sections(page)
    for s in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "SIGNALS", "SEE ALSO"):
        if s not in secs:
            fail("picket.1: no %s section (has %s)" % (s, ", ".join(secs)))
    if failures:
        return report()

    # picket help, --help, -h; and the bare command
    r = run([a.picket, "help"])
    help_text = r.stdout
    if r.returncode != 0 or "usage: picket <command>" not in help_text:
        fail("picket help: exit %d\n%s" % (r.returncode, help_text + r.stderr))
    for alias in ("--help", "-h"):
        r2 = run([a.picket, alias])
        if r2.returncode != 0 or r2.stdout != help_text:
            fail("picket %s: exit %d, not the text of picket help" % (alias, r2.returncode))
    r2 = run([a.picket])
    if r2.returncode != 2 or r2.stderr != help_text:
        fail("picket (no command): exit %d (want 2), help text on stderr: %s"
             % (r2.returncode, r2.stderr == help_text))

    # every listed command is in the page
    listed = help_commands(help_text)
    if len(listed) < 10:
        fail("picket help lists only %r" % listed)
    for cmd in listed:
        name = "picket " + cmd
        for s in ("SYNOPSIS", "COMMANDS", "EXIT STATUS"):
            if not re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", flat(secs[s])):
                fail("'%s' is listed by picket help but not in the %s section of picket.1"
                     % (name, s))

    # every dispatched command is listed
    for cmd in source_commands(a.root):
        if not any(c == cmd or c.startswith(cmd + " ") for c in listed):
            fail("proxy/cli dispatches 'picket %s', which picket help does not list" % cmd)

    # every option is in the page
    usage_texts = []
    for argv in (["cert", "help"], ["bundle", "help"], ["policy", "--help"],
                 ["control", "--help"], ["inject", "--help"], ["dev", "--help"],
                 ["run", "--help"]):
        r = run([a.picket] + argv)
        usage_texts.append((" ".join(argv), r.stdout + r.stderr))
        if "usage" not in r.stdout + r.stderr:
            fail("picket %s: no usage text (exit %d)" % (" ".join(argv), r.returncode))
    opts = {}
    commands_text = help_text.split("commands:\n", 1)[-1].split("\n\n", 1)[0]
    for what, text in usage_texts + [("picket help", commands_text)]:
        for o in re.findall(r"(?:(?<=\s)|(?<=\[)|(?<=\())(--?[a-z][a-z0-9-]*)", text):
            opts.setdefault(o, what)
    for o in source_options(a.root):
        opts.setdefault(o, "proxy/cli sources")
    body = flat(secs["COMMANDS"] + secs["SYNOPSIS"] + secs["DESCRIPTION"])
    for o, where in sorted(opts.items()):
        if not has_word(body, o):
            fail("option %s (from %s) is not in picket.1" % (o, where))

    # cmake --install
    with tempfile.TemporaryDirectory(prefix="picket-install-") as prefix:
        r = run([a.cmake, "--install", a.build, "--prefix", prefix])
        if r.returncode != 0:
            fail("cmake --install: exit %d\n%s" % (r.returncode, r.stdout + r.stderr))
        else:
            found = {}
            for d, _, files in os.walk(prefix):
                for f in files:
                    found[f] = os.path.relpath(os.path.join(d, f), prefix)
            if not found.get("picket", "").endswith(os.path.join("bin", "picket")):
                fail("cmake --install: no bin/picket (%s)" % sorted(found.values()))
            if not found.get("picket.1", "").endswith(os.path.join("man", "man1", "picket.1")):
                fail("cmake --install: no share/man/man1/picket.1 (%s)" % sorted(found.values()))
            elif open(os.path.join(prefix, found["picket.1"])).read() != open(a.man).read():
                fail("cmake --install: the installed picket.1 is not the build's")
    return report()


def report():
    for f in failures:
        print("man_page: " + f)
    if not failures:
        print("man_page: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
