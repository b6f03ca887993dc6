#!/usr/bin/env python3
"""Soak test (issue 5, point 5): many concurrent clients for a while against
lighttpd with several responder processes, mixed plain and streamed requests,
with failing and slow upstreams; afterwards every answer must be one
doc/behaviour.md allows, every limit exact, each responder's RSS and open
descriptors flat, and the state file consistent.

    python3 tests/soak/soak.py [--seconds 60] [--clients 64] [--procs 4] [-v]

Python 3 standard library only, loopback only. It starts lighttpd (through
tests/integration/harness.py, max-procs --procs, API_TOGETHER_THREADS threads
each) and five mock upstreams of its own (below: the shared mock_upstream.py
answers from a listen backlog of 5 and one script at a time; this one keeps a
deep backlog and draws each answer at random), drives --clients client threads
for --seconds, and stops everything it started (also on a failed check, an
exception, SIGINT or SIGTERM; a watchdog ends the run if it overruns). The
checks assume the load of the defaults: 64 clients for 15 s or more fill the
limits and the connection caches.

The endpoints (cooldown: 3 failures in a row take one out for 2 s):

    fast    answers at once (chat, or a stream of 4 events)       unlimited
    slow    answers after 0.2-1.0 s (streams slower too)          unlimited
    flaky   fails 36 % of the time: 500 (14 %), connection closed
            without an answer (11 %), empty 200 (11 %)            unlimited
    minute  answers at once                                        rpm 30
    daily   answers at once                                        rpd 100

and the models the clients ask for, with the answers each may get:

    soak-mix    all five     200 only (fast never fails and is never limited)
    soak-slow   slow         200 only
    soak-tight  minute+daily 200, 429 rate_limit_exceeded (with Retry-After)
    soak-flaky  flaky        200, 500 passed through from the upstream, 200 with
                             the empty body passed through (doc/behaviour.md,
                             Forwarding: after the last attempt the client
                             gets the last upstream answer),
                             502 upstream_unreachable, 503 no_available_api

Each client loops: ~60 % plain chat, ~30 % streams (read to the end, every
event checked), ~10 % the gateway's own /v1/models, /v1/status and /health.
Keep-alive connections; a reused connection that the server had closed
before the request (no byte of an answer) is retried once on a new one and
counted apart, anything else that fails on the wire is a failure.

Checks, each printed as ok/FAIL with its reason, then "N passed, N failed"
(exit status 1 when any failed):

  answers    every answer is in the table above and well formed (a 200 chat
             answer or a complete stream of the mock's events, an OpenAI error
             object with application/json, Retry-After on a 429); no
             connection error, no request longer than --request-timeout (hung)
  limits     the rpm endpoint's mock received at most 30 requests in any window
             of 60 s minus the delivery slack (--slack, 1 s: the responder
             counts a request a moment before the mock sees it), and exactly 30
             in the first minute (it is over-asked); the rpd endpoint's mock
             received exactly 100 in all (over-asked too: 429s were seen); no
             429 came before both endpoints were full; each Retry-After is the
             seconds until the oldest minute request leaves its window (+-2 s);
             every /v1/status sampled during the run showed usage within limits
  replays    no mock received the same client request twice (each message is
             unique per client request; doc/behaviour.md, Forwarding:
             an endpoint is tried once per request). libcurl sends a request again on a new connection when
             a reused one closes without an answer, which the responder does
             not count: with --allow-replays this is shown as KNOWN, not FAIL
  state      /v1/status usage.rpd of each endpoint equals the requests its mock
             received, less those replays (each forwarded attempt counts once,
             doc/behaviour.md, Limits and state, rule 1; no endpoint here refuses connections, and the mocks record
             every request that reaches them, so no other difference is
             allowed); the token totals equal the usage of the answers the mocks
             completed; `api-together --status` exits 0 and agrees with
             /v1/status (rpd, tokens). A run across midnight (UTC, the zone
             the responder is given) skips the per-day comparison.
  processes  the same responder pids at the end as at the start (none died or
             was restarted), lighttpd still running, nothing in lighttpd's error
             log but its start and stop (no backend died or was overloaded)
  logs       every responder log line well formed, none at level error, one
             line per forwarded request with the status its client got
             (doc/behaviour.md, Logs)
  flat       after the warm-up (10 % of the run, at least 3 s: the connection
             caches fill first) each responder's VmRSS, worker threads and
             open descriptors are sampled every 0.5 s. The rule: the median of
             the samples of the last fifth of the run must be within 10 % of
             the median of the first fifth, with a slack of +2 descriptors and
             +1024 kB for small baselines (end <= max(start * 1.10, start +
             slack)). Medians, because a process's FastCGI connections move
             with the load of the moment; a leak moves every sample.
             Descriptors are judged in two parts. Upstream connections (TCP to
             a mock) follow the traffic, not a leak: each libcurl handle keeps
             at most one connection per upstream, a handle is taken per
             request in flight (so there are at most as many as worker
             threads), and which handles hold a connection to an upstream that
             closes some (flaky) or was cooling down drifts through the run.
             So every sample must hold at most one connection per worker
             thread to each upstream, and the other descriptors (state lock
             files, FastCGI connections, libcurl's wake-up pairs, logs) must
             be flat, plus 4 for each worker thread started after the first
             fifth (its store's lock file, its FastCGI connection, the
             wake-up pair of the libcurl handle it may add; threads follow
             the peaks of a process's load and stay). Six points over the
             run and the quiet values (after the load, every client gone)
             are printed too.
"""

import argparse
import collections
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

CLIENT_KEY = "sk-soak-client-key-0123456789"
TZ = "UTC0"  # the responder's and --status's zone: a day starts at a known moment
CHAT = "/v1/chat/completions"
CHAT_USAGE = (11, 7)
STREAM_USAGE = (5, 3)
STREAM_EVENTS = 4
MOCK_ERROR_CODE = "mock_failure"
MOCK_ERROR_BODY = json.dumps({"error": {"message": "injected failure", "type": "server_error",
                                        "code": MOCK_ERROR_CODE}}).encode()
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z (debug|info|warn|error) "
                      r"api-together\[\d+\]: (.*)$")
LOG_CHAT = re.compile(r"^POST /v1/chat/completions model=(\S+)(?: fallback=\S+)? tried=\S+ "
                      r"status=(\d+) attempts=\d+ ms=\d+(?: client=\S+)?$")
RPM_LIMIT = 30
RPD_LIMIT = 100


def log(msg=""):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# Mock upstreams


class _MockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "soak-mock/1"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline(65537)
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_POST(self):
        mock = self.server.mock
        body = self._body()
        try:
            j = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            j = None
        stream = isinstance(j, dict) and j.get("stream") is True
        model = j.get("model") if isinstance(j, dict) and isinstance(j.get("model"), str) \
            else "none"
        self.conn_seq = getattr(self, "conn_seq", 0) + 1
        key = None
        try:
            key = j["messages"][0]["content"]
        except (TypeError, KeyError, IndexError):
            pass
        outcome, delay = mock.decide(stream)
        rec = mock.record(outcome, model, key, self.conn_seq)
        try:
            if delay > 0:
                time.sleep(delay)
            if outcome == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if outcome == "stream":
                self._stream(mock, rec, model)
                return
            if outcome == "500":
                self._send(500, MOCK_ERROR_BODY)
            elif outcome == "empty":
                self._send(200, b"")
            else:
                pt, ct = CHAT_USAGE
                doc = {"id": "chatcmpl-soak-%d" % rec[0], "object": "chat.completion",
                       "created": int(time.time()), "model": model,
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant",
                                                "content": "hello from " + mock.name}}],
                       "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                                 "total_tokens": pt + ct}}
                self._send(200, json.dumps(doc).encode())
            mock.done(rec)
        except OSError:
            self.close_connection = True

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        self.wfile.flush()

    def _stream(self, mock, rec, model):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = int(time.time())
        base = {"id": "chatcmpl-soak-%d" % rec[0], "object": "chat.completion.chunk",
                "created": created, "model": model}
        events = [dict(base, choices=[{"index": 0, "delta": {"content": "tok%d " % i},
                                       "finish_reason": None}])
                  for i in range(STREAM_EVENTS)]
        pt, ct = STREAM_USAGE
        events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}],
                           usage={"prompt_tokens": pt, "completion_tokens": ct,
                                  "total_tokens": pt + ct}))
        lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        lines.append(b"data: [DONE]\n\n")
        for i, line in enumerate(lines):
            if i:
                time.sleep(mock.interval())
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        mock.done(rec)


class _MockServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # 64 clients x retries: no SYN may be dropped

    def __init__(self, mock):
        self.mock = mock
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _MockHandler)

    def process_request(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return  # the responder went away mid-answer: no news
        super().handle_error(request, client_address)


class SoakMock:
    """An upstream that draws each answer at random. fail: {"500": p, "close": p,
    "empty": p}; delay: (lo, hi) seconds before the answer."""

    def __init__(self, name, fail=None, delay=(0.0, 0.0), interval=(0.003, 0.02), seed=0):
        self.name = name
        self.fail = fail or {}
        self.delay = delay
        self.interval_range = interval
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        # [index, monotonic time, outcome, model, completed, the request's
        #  message (unique per client request), its number on its connection]
        self.records = []
        self.server = None
        self.thread = None

    def start(self):
        self.server = _MockServer(self)
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       name="mock-" + self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is None:
            return
        self.server.shutdown()
        with self.server.conns_lock:
            conns = list(self.server.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()
        self.server = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def decide(self, stream):
        with self.lock:
            x = self.rng.random()
            outcome = "stream" if stream else "chat"
            acc = 0.0
            for kind in ("500", "close", "empty"):
                acc += self.fail.get(kind, 0.0)
                if x < acc:
                    outcome = kind
                    break
            lo, hi = self.delay
            delay = self.rng.uniform(lo, hi) if hi > 0 else 0.0
        return outcome, delay

    def interval(self):
        lo, hi = self.interval_range
        with self.lock:
            return self.rng.uniform(lo, hi)

    def record(self, outcome, model, key, conn_seq):
        with self.lock:
            rec = [len(self.records), time.monotonic(), outcome, model, False, key, conn_seq]
            self.records.append(rec)
            return rec

    def done(self, rec):
        with self.lock:
            rec[4] = True

    def snapshot(self):
        with self.lock:
            return [list(r) for r in self.records]


# ---------------------------------------------------------------------------
# Clients

# What each model may answer (doc/behaviour.md, Errors and Forwarding, with
# these upstreams), by class.
ALLOWED = {
    "soak-mix": {"200"},
    "soak-slow": {"200"},
    "soak-tight": {"200", "429 rate_limit_exceeded"},
    "soak-flaky": {"200", "500 " + MOCK_ERROR_CODE, "200 empty (passed through)",
                   "502 upstream_unreachable", "503 no_available_api"},
}
OWN_ALLOWED = {"200"}
MODELS = [("soak-mix", 0.55), ("soak-tight", 0.17), ("soak-flaky", 0.18), ("soak-slow", 0.10)]


def pick(rng, table):
    x = rng.random()
    acc = 0.0
    for v, p in table:
        acc += p
        if x < acc:
            return v
    return table[-1][0]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # (op, model, class) -> n
        self.forwarded = collections.Counter()  # (model, status) of chat requests
        self.bad = []  # (op, model, class, detail)
        self.latencies = []
        self.total = 0
        self.stale_retries = 0
        self.status_samples = []  # /v1/status docs seen during the run
        self.answers_429 = []  # (monotonic time the answer was read, Retry-After)

    def add(self, op, model, cls, ok, detail, elapsed, t):
        with self.lock:
            self.total += 1
            self.counts[(op, model, cls)] += 1
            self.latencies.append(elapsed)
            if not ok:
                self.bad.append((op, model, cls, detail))


class Client:
    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout
        self.conn = None
        self.used = False

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _exchange(self, method, path, body, headers):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.used = False
        reused = self.used
        self.used = True
        got_answer = False
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            got_answer = True
            data = resp.read()
            if resp.will_close:
                self.close()
            return resp.status, resp.getheaders(), data
        except Exception as e:
            self.close()
            stale = (reused and not got_answer and
                     isinstance(e, (http.client.RemoteDisconnected, ConnectionResetError,
                                    BrokenPipeError)))
            if stale:
                raise _Stale() from e
            raise

    def exchange(self, method, path, body=None, headers=None):
        try:
            return self._exchange(method, path, body, headers or {}), False
        except _Stale:
            return self._exchange(method, path, body, headers or {}), True


class _Stale(Exception):
    pass


def _header(headers, name):
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def classify_forwarded(status, headers, data, stream, model):
    """(class, ok-so-far, detail) of an answer to a chat request."""
    ctype = (_header(headers, "content-type") or "").lower()
    if status == 200:
        if not data:
            return "200 empty (passed through)", True, ""
        if stream:
            if not ctype.startswith("text/event-stream"):
                return "200 bad", False, "stream answered as %s: %r" % (ctype, data[:200])
            events = [l[5:].strip() for l in data.split(b"\n") if l.startswith(b"data:")]
            if len(events) != STREAM_EVENTS + 2 or events[-1] != b"[DONE]":
                return "200 bad", False, "stream of %d events, last %r" % (
                    len(events), events[-1:] or None)
            try:
                docs = [json.loads(e) for e in events[:-1]]
            except ValueError as e:
                return "200 bad", False, "event not JSON: %s" % e
            if any(d.get("model") != model for d in docs) or "usage" not in docs[-1]:
                return "200 bad", False, "stream events: %r" % data[:300]
            return "200", True, ""
        try:
            doc = json.loads(data)
            ok = (doc["model"] == model and doc["choices"][0]["message"]["content"]
                  and doc["usage"]["total_tokens"] == sum(CHAT_USAGE))
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
        return ("200", True, "") if ok else ("200 bad", False, "answer %r" % data[:300])
    code = None
    try:
        doc = json.loads(data)
        code = doc["error"]["code"]
        if not isinstance(doc["error"]["message"], str):
            code = None
    except (ValueError, KeyError, TypeError):
        pass
    cls = "%d %s" % (status, code if code is not None else "(not an OpenAI error: %r)"
                     % data[:120])
    if code is not None and not ctype.startswith("application/json"):
        return cls, False, "error with Content-Type %r" % ctype
    if status == 429:
        ra = _header(headers, "retry-after")
        if ra is None or not ra.strip().isdigit():
            return cls, False, "429 without a Retry-After in seconds (%r)" % ra
    return cls, True, ""


def client_loop(cid, port, args, stats, stop_at, seed, mix):
    rng = random.Random(seed)
    cl = Client(port, args.request_timeout)
    auth = {"Authorization": "Bearer " + CLIENT_KEY}
    n = 0
    try:
        while time.monotonic() < stop_at:
            n += 1
            x = rng.random()
            op = "chat" if x < mix[0] else "stream" if x < mix[0] + mix[1] else "own"
            model = None
            t0 = time.monotonic()
            if op == "own":
                path = rng.choice(["/v1/models", "/v1/status", "/health"])
                model = path
                method, body, headers = "GET", None, auth
            else:
                model = pick(rng, MODELS)
                doc = {"model": model, "messages": [
                    {"role": "user", "content": "soak %d/%d" % (cid, n)}]}
                if op == "stream":
                    doc["stream"] = True
                method, path, body = "POST", CHAT, json.dumps(doc).encode()
                headers = dict(auth, **{"Content-Type": "application/json"})
            try:
                (status, hdrs, data), stale = cl.exchange(method, path, body, headers)
            except socket.timeout:
                stats.add(op, model, "hung", False, "no complete answer within %ss"
                          % args.request_timeout, time.monotonic() - t0, t0)
                continue
            except Exception as e:
                stats.add(op, model, "connection error", False, repr(e),
                          time.monotonic() - t0, t0)
                continue
            elapsed = time.monotonic() - t0
            if stale:
                with stats.lock:
                    stats.stale_retries += 1
            if op == "own":
                cls, ok, detail = own_check(path, status, data, stats)
                stats.add(op, model, cls, ok and cls in OWN_ALLOWED, detail or cls, elapsed, t0)
            else:
                cls, ok, detail = classify_forwarded(status, hdrs, data, op == "stream", model)
                with stats.lock:
                    stats.forwarded[(model, status)] += 1
                    if status == 429:
                        ra = _header(hdrs, "retry-after") or ""
                        stats.answers_429.append((t0 + elapsed,
                                                  int(ra) if ra.strip().isdigit() else None))
                allowed = cls in ALLOWED[model]
                stats.add(op, model, cls, ok and allowed,
                          detail or "not in the table for %s" % model, elapsed, t0)
    finally:
        cl.close()


def own_check(path, status, data, stats):
    if status != 200:
        return "%d" % status, False, "%s -> %d %r" % (path, status, data[:200])
    try:
        doc = json.loads(data)
    except ValueError:
        return "200 bad", False, "%s: not JSON %r" % (path, data[:200])
    if path == "/health":
        ok = doc.get("status") == "ok"
    elif path == "/v1/models":
        ids = {m.get("id") for m in doc.get("data", [])}
        ok = {m for m, _ in MODELS} <= ids
    else:
        ok = isinstance(doc.get("apis"), list) and len(doc["apis"]) == 5
        if ok:
            with stats.lock:
                stats.status_samples.append(doc)
    return ("200", True, "") if ok else ("200 bad", False, "%s: %r" % (path, data[:300]))


# ---------------------------------------------------------------------------
# Process figures


def tcp_peers(pid):
    """{socket inode: remote port} of the IPv4 TCP sockets in pid's network
    namespace (the mocks listen on 127.0.0.1)."""
    out = {}
    try:
        with open("/proc/%d/net/tcp" % pid) as f:
            next(f)
            for line in f:
                p = line.split()
                out[p[9]] = int(p[2].rsplit(":", 1)[1], 16)
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return out


def proc_figures(pid, upstream_ports=()):
    """(VmRSS kB, open descriptors, worker threads, {upstream port: TCP
    connections to it}) of pid, or None when it is gone. Worker threads:
    every thread but the main one."""
    try:
        rss = threads = None
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1]) - 1
        names = os.listdir("/proc/%d/fd" % pid)
        ups = {port: 0 for port in upstream_ports}
        peers = tcp_peers(pid) if upstream_ports else {}
        for n in names:
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, n))
            except OSError:
                continue  # closed since the listing
            if link.startswith("socket:[") and peers.get(link[8:-1]) in ups:
                ups[peers[link[8:-1]]] += 1
        return rss, len(names), threads, ups
    except OSError:
        return None


class Sampler(threading.Thread):
    def __init__(self, pids, every, stop_ev, upstream_ports=()):
        super().__init__(name="sampler", daemon=True)
        self.pids = pids
        self.every = every
        self.stop_ev = stop_ev
        self.upstream_ports = tuple(upstream_ports)
        # pid -> [(t, rss, fds, worker threads, {upstream port: connections})]
        self.samples = {p: [] for p in pids}
        self.gone = set()

    def sample_once(self):
        t = time.monotonic()
        for p in self.pids:
            f = proc_figures(p, self.upstream_ports)
            if f is None:
                self.gone.add(p)
            else:
                self.samples[p].append((t,) + f)

    def run(self):
        while not self.stop_ev.is_set():
            self.sample_once()
            self.stop_ev.wait(self.every)


def flat_limit(start, slack):
    return max(start * 1.10, start + slack)


def flat(start, end, slack):
    return end <= flat_limit(start, slack)


# Descriptors a worker thread brings: its store handle's lock file, the
# FastCGI connection it serves, the wake-up pair of a libcurl handle.
FDS_PER_THREAD = 4


# ---------------------------------------------------------------------------
# Checks


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.known = 0

    def check(self, ok, name, detail="", known=False):
        """known: a failure already reported (--allow-replays), shown as KNOWN
        and not counted as failed."""
        if ok:
            self.passed += 1
            mark = "ok"
        elif known:
            self.known += 1
            mark = "KNOWN"
        else:
            self.failed += 1
            mark = "FAIL"
        log("%-5s %s%s" % (mark, name, (": " + detail) if detail else ""))
        return ok


def max_in_window(times, width):
    """Most timestamps in any half-open window [t, t + width)."""
    times = sorted(times)
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


def cli_status(gw):
    env = dict(os.environ, API_TOGETHER_CONFIG=gw.config_path, API_TOGETHER_STATE=gw.state_path,
               TZ=TZ)
    return subprocess.run([gw.binary, "--status"], env=env, capture_output=True, text=True,
                          timeout=30)


def cli_rows(out):
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 7 and "/" in f[2] and "/" in f[3]:
            try:
                rows[f[0]] = {"rpm": int(f[2].split("/")[0]), "rpd": int(f[3].split("/")[0]),
                              "failures": int(f[4]),
                              "tokens": [int(x) for x in f[-1].split("/")]}
            except ValueError:
                pass
    return rows


def endpoints_config(mocks):
    def ep(mid, models, **kw):
        d = {"id": mid, "name": "soak " + mid, "baseUrl": mocks[mid].url,
             "apiKey": "sk-upstream-" + mid, "models": models}
        d.update(kw)
        return d
    return [
        ep("fast", ["soak-mix"], weight=2),
        ep("slow", ["soak-mix", "soak-slow"]),
        ep("flaky", ["soak-mix", "soak-flaky"], weight=2),
        ep("minute", ["soak-mix", "soak-tight"], rpm=RPM_LIMIT),
        ep("daily", ["soak-mix", "soak-tight"], rpd=RPD_LIMIT),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the load (60)")
    ap.add_argument("--clients", type=int, default=64, help="client threads (64)")
    ap.add_argument("--procs", type=int, default=4, help="lighttpd max-procs (4)")
    ap.add_argument("--threads", type=int, default=16,
                    help="API_TOGETHER_THREADS of each responder (16)")
    ap.add_argument("--warmup", type=float, default=0.10,
                    help="share of the run before the first RSS/fd sample (0.10, "
                    "at least 3 s)")
    ap.add_argument("--request-timeout", type=float, default=30.0,
                    help="a request slower than this is hung (30 s)")
    ap.add_argument("--slack", type=float, default=1.0,
                    help="delivery slack of the RPM window check (1 s)")
    ap.add_argument("--allow-replays", action="store_true",
                    help="report libcurl's replays of a request on a new connection as "
                    "KNOWN instead of failing (until the responder prevents them)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)

    for what, ok in (("responder", os.access(harness.BIN, os.X_OK)),
                     ("lighttpd", harness.server_missing("lighttpd") is None)):
        if not ok:
            log("soak: %s not found (%s); build first: make src/api-together"
                % (what, harness.BIN if what == "responder" else harness.LIGHTTPD))
            log("0 passed, 1 failed")
            return 1

    # Ends the run if it overruns (a hung gateway, a stuck join): everything
    # started is stopped by the finally below, then the process exits.
    budget = args.seconds + args.request_timeout + 90
    main_thread_id = threading.get_ident()
    overrun = threading.Event()

    def watchdog():
        if not overrun.wait(budget):
            log("soak: watchdog: the run exceeded %.0f s; stopping" % budget)
            signal.pthread_kill(main_thread_id, signal.SIGTERM)
            time.sleep(30)
            os._exit(3)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()

    mocks = {}
    gw = None
    report = Report()
    try:
        mocks["fast"] = SoakMock("fast", seed=seed + 1).start()
        mocks["slow"] = SoakMock("slow", delay=(0.2, 1.0), interval=(0.02, 0.08),
                                 seed=seed + 2).start()
        mocks["flaky"] = SoakMock("flaky", fail={"500": 0.14, "close": 0.11, "empty": 0.11},
                                  seed=seed + 3).start()
        mocks["minute"] = SoakMock("minute", seed=seed + 4).start()
        mocks["daily"] = SoakMock("daily", seed=seed + 5).start()
        config = {
            "server": {"port": 3001, "apiKey": CLIENT_KEY,
                       "cooldown": {"failures": 3, "seconds": 2},
                       "connectTimeoutSeconds": 5, "timeoutSeconds": 10},
            "apis": endpoints_config(mocks),
        }
        gw = harness.Gateway(config, max_procs=args.procs, name="soak", tz=TZ,
                             extra_env={"API_TOGETHER_THREADS": str(args.threads),
                                        "API_TOGETHER_LOG_LEVEL": "info"})
        gw.start()
        day0 = time.strftime("%Y-%m-%d", time.gmtime())
        lighttpd_pid = gw.proc.pid
        pids0 = gw.responder_pids()
        log("soak: %d clients for %.0f s against lighttpd %s (max-procs %d, %d threads each: "
            "responders %s), seed %d, dir %s" % (args.clients, args.seconds, harness.LIGHTTPD,
                                                args.procs, args.threads, pids0, seed, gw.dir))

        stats = Stats()
        t_start = time.monotonic()
        stop_at = t_start + args.seconds
        # At least 3 s (at most 30 % of the run): every worker thread's
        # connection cache should have filled before the baseline is taken.
        warm_end = t_start + max(args.seconds * args.warmup, min(3.0, args.seconds * 0.3))
        mix = (0.60, 0.30)
        clients = [threading.Thread(target=client_loop, name="client-%d" % i,
                                    args=(i, gw.port, args, stats, stop_at,
                                          seed * 1000 + i, mix), daemon=True)
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        # Warm-up, then the responders as they are: the pids to follow.
        time.sleep(max(0.0, warm_end - time.monotonic()))
        pids = gw.responder_pids()
        stop_ev = threading.Event()
        upstream_ports = {m.server.server_address[1]: k for k, m in mocks.items()}
        sampler = Sampler(pids + [lighttpd_pid], 0.5, stop_ev, upstream_ports)
        sampler.start()
        last_report = time.monotonic()
        while time.monotonic() < stop_at:
            time.sleep(min(1.0, max(0.0, stop_at - time.monotonic())))
            if args.verbose and time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                with stats.lock:
                    log("  t=%4.0fs %6d answers, %d bad" % (last_report - t_start, stats.total,
                                                           len(stats.bad)))
        join_deadline = time.monotonic() + args.request_timeout + 5
        for c in clients:
            c.join(max(0.1, join_deadline - time.monotonic()))
        hung_threads = [c.name for c in clients if c.is_alive()]
        t_load = time.monotonic() - t_start
        stop_ev.set()
        sampler.join(5)
        time.sleep(1.0)  # quiet: every client gone, the responders idle
        quiet = {p: proc_figures(p) for p in pids}
        pids_end = gw.responder_pids()
        lighttpd_alive = gw.proc.poll() is None
        day1 = time.strftime("%Y-%m-%d", time.gmtime())

        # The state as the gateway shows it, and as the CLI reads it.
        r = gw.request("GET", "/v1/status", key=CLIENT_KEY)
        status_doc = r.json() if r.status == 200 else None
        cli = cli_status(gw)
        rows = cli_rows(cli.stdout)
        recs = {k: m.snapshot() for k, m in mocks.items()}

        # ---------------------------------------------------------- figures
        log("")
        log("== load")
        total = stats.total
        log("answers        %d in %.1f s: %.0f req/s (%d clients; %d stale keep-alive "
            "connections retried)" % (total, t_load, total / t_load if t_load else 0,
                                      args.clients, stats.stale_retries))
        lat = sorted(stats.latencies)
        if lat:
            q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
            log("latency        p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (
                q(0.50) * 1000, q(0.99) * 1000, lat[-1] * 1000))
        by_op = collections.Counter()
        for (op, _, _), n in stats.counts.items():
            by_op[op] += n
        log("requests       " + ", ".join("%s %d" % kv for kv in sorted(by_op.items())))
        log("")
        log("== answers (request, model or path, answer: count)")
        for (op, model, cls), n in sorted(stats.counts.items()):
            allowed = (OWN_ALLOWED if op == "own" else ALLOWED[model])
            mark = "" if cls in allowed else "   <-- not allowed"
            log("  %-6s %-12s %-36s %6d%s" % (op, model, cls, n, mark))
        mix_all = collections.Counter()
        for (op, model, cls), n in stats.counts.items():
            mix_all[cls] += n
        log("  status mix: " + ", ".join("%s %d" % kv for kv in mix_all.most_common()))

        log("")
        log("== upstreams (requests the mock received; outcomes)")
        state_by_id = {a["id"]: a for a in (status_doc or {}).get("apis", [])}
        log("  %-7s %6s %8s %8s  %-40s %s" % ("id", "mock", "usage", "--status",
                                              "outcomes", "tokens p/c/t (state | expected)"))
        expected_tokens = {}
        for k, rs in recs.items():
            oc = collections.Counter(r[2] for r in rs)
            p = c = 0
            for rec in rs:
                if rec[4] and rec[2] in ("chat", "stream"):
                    u = CHAT_USAGE if rec[2] == "chat" else STREAM_USAGE
                    p += u[0]
                    c += u[1]
            expected_tokens[k] = [p, c, p + c]
            st = state_by_id.get(k, {})
            tok = st.get("tokens", {})
            log("  %-7s %6d %8s %8s  %-40s %s | %s" % (
                k, len(rs), st.get("usage", {}).get("rpd", "?"),
                rows.get(k, {}).get("rpd", "?"),
                ", ".join("%s %d" % kv for kv in sorted(oc.items())),
                "/".join(str(tok.get(x, "?")) for x in ("prompt", "completion", "total")),
                "/".join(map(str, expected_tokens[k]))))

        tm = sorted(r[1] for r in recs["minute"])
        td = sorted(r[1] for r in recs["daily"])
        gaps = [b - a for a, b in zip(tm, tm[RPM_LIMIT:])]
        log("limits         minute: %d requests, the first %d within %.2f s, %s; "
            "daily: %d, the last %.1f s into the run" % (
                len(tm), min(len(tm), RPM_LIMIT),
                (tm[min(len(tm), RPM_LIMIT) - 1] - tm[0]) if tm else 0,
                "request n+%d at least %.2f s after request n" % (RPM_LIMIT, min(gaps))
                if gaps else "none after them (the window never reopened in the run)",
                len(td), (td[-1] - t_start) if td else 0))
        log("")
        log("== processes (pid: VmRSS kB / open fds; start = median of the first fifth after "
            "the warm-up, end = median of the last fifth, quiet = after the load; other fds: "
            "all but the upstream connections)")
        flat_results = []
        for p in pids + [lighttpd_pid]:
            smp = sampler.samples.get(p, [])
            if len(smp) < 2:
                log("  %-7d too few samples (%d)" % (p, len(smp)))
                flat_results.append((p, None))
                continue
            k = max(1, len(smp) // 5)
            rs0 = statistics.median(x[1] for x in smp[:k])
            rs1 = statistics.median(x[1] for x in smp[-k:])
            fd0 = statistics.median(x[2] for x in smp[:k])
            fd1 = statistics.median(x[2] for x in smp[-k:])
            other = [x[2] - sum(x[4].values()) for x in smp]
            of0, of1 = statistics.median(other[:k]), statistics.median(other[-k:])
            rmin, rmax = min(x[1] for x in smp), max(x[1] for x in smp)
            fmin, fmax = min(x[2] for x in smp), max(x[2] for x in smp)
            qf = quiet.get(p) if p != lighttpd_pid else proc_figures(p)
            who = "lighttpd" if p == lighttpd_pid else "responder"
            log("  %-9s %-7d RSS %7.0f -> %7.0f kB (%+5.1f %%, range %d-%d)  fds %4.0f -> %4.0f "
                "(range %d-%d)  quiet %s  [%d samples]" % (
                    who, p, rs0, rs1, 100.0 * (rs1 - rs0) / rs0 if rs0 else 0, rmin, rmax,
                    fd0, fd1, fmin, fmax,
                    "%d kB / %d fds" % qf[:2] if qf else "gone", len(smp)))
            pts = [smp[min(len(smp) - 1, int(i * (len(smp) - 1) / 5))] for i in range(6)]
            log("  %-9s %-7s RSS kB over the run: %s; fds: %s" % (
                "", "", " ".join(str(x[1]) for x in pts), " ".join(str(x[2]) for x in pts)))
            if p == lighttpd_pid:
                continue
            # The most connections to one upstream against the worker
            # threads of the same sample (libcurl handles <= threads).
            worst = max(smp, key=lambda x: max(x[4].values() or [0]) - x[3])
            wport = max(worst[4], key=worst[4].get) if worst[4] else None
            log("  %-9s %-7s other fds %.0f -> %.0f; worker threads %d-%d; upstream "
                "connections over the run: %s" % (
                    "", "", of0, of1, min(x[3] for x in smp), max(x[3] for x in smp),
                    " ".join("%s %s" % (upstream_ports[port], "/".join(
                        str(x[4][port]) for x in pts)) for port in upstream_ports)))
            more_threads = max(0, max(x[3] for x in smp[-k:])
                               - statistics.median(x[3] for x in smp[:k]))
            flat_results.append((p, {
                "rss": (rs0, rs1), "other": (of0, of1, more_threads),
                "ups": (worst[4].get(wport, 0), upstream_ports.get(wport, "-"), worst[3])}))

        # ----------------------------------------------------------- checks
        log("")
        log("== checks")
        bad = stats.bad
        detail = ""
        if bad:
            shown = collections.OrderedDict()
            for op, model, cls, d in bad:
                shown.setdefault((op, model, cls), (0, d))
                n, d0 = shown[(op, model, cls)]
                shown[(op, model, cls)] = (n + 1, d0)
            detail = "; ".join("%s %s %s x%d (%s)" % (op, model, cls, n, d[:300])
                               for (op, model, cls), (n, d) in shown.items())
        report.check(not bad, "every answer in the table (%d answers, %d not)"
                     % (total, len(bad)), detail)
        report.check(not hung_threads, "no client hung past the end",
                     ", ".join(hung_threads))
        n_forwarded = sum(n for (op, _, _), n in stats.counts.items() if op != "own")
        report.check(total > args.clients and n_forwarded > 0,
                     "load happened (%d answers)" % total)

        # limits
        t_minute = [r[1] for r in recs["minute"]]
        win = max_in_window(t_minute, 60.0 - args.slack)
        win60 = max_in_window(t_minute, 60.0)
        report.check(win <= RPM_LIMIT,
                     "rpm %d: at most %d in any %.0f s window at the mock (max %d; %d in "
                     "an exact 60 s window%s)" % (
                         RPM_LIMIT, RPM_LIMIT, 60.0 - args.slack, win, win60,
                         ", request n+%d >= %.2f s after request n" % (RPM_LIMIT, min(gaps))
                         if gaps else ""))
        first_min = [t for t in t_minute if t_minute and t < t_minute[0] + 60.0 - args.slack]
        n429 = sum(n for (op, m, cls), n in stats.counts.items() if cls.startswith("429"))
        report.check(len(first_min) == RPM_LIMIT or (n429 == 0 and len(first_min) < RPM_LIMIT),
                     "rpm %d reached exactly in the first minute (%d; 429s seen: %d)"
                     % (RPM_LIMIT, len(first_min), n429))
        nd = len(recs["daily"])
        report.check(nd == RPD_LIMIT if n429 else nd <= RPD_LIMIT,
                     "rpd %d: the mock received %d in all (%s)" % (
                         RPD_LIMIT, nd, "429s seen, so it must be reached exactly" if n429
                         else "no 429 seen: it need not be reached"))
        report.check(n429 > 0, "the limits were exercised (429 answers: %d)" % n429)
        # A 429 only once both endpoints of soak-tight were full: its answer
        # came after the reservation of the last free request, which reached
        # its mock at most --slack later.
        t_daily = sorted(r[1] for r in recs["daily"])
        if stats.answers_429 and len(t_minute) >= RPM_LIMIT and len(t_daily) >= RPD_LIMIT:
            full_at = max(sorted(t_minute)[RPM_LIMIT - 1], t_daily[RPD_LIMIT - 1])
            first = min(t for t, _ in stats.answers_429)
            report.check(first >= full_at - args.slack,
                         "no 429 before both endpoints were full (first 429 %.2f s after the "
                         "last free request reached its mock)" % (first - full_at))
            # Retry-After: seconds until the oldest minute request leaves the window
            t_first = min(t_minute)
            wrong = []
            for t, ra in stats.answers_429:
                if t > t_first + 60.0 - 3.0:
                    continue  # near the moment a slot frees: rounding either way
                want = t_first + 60.0 - t
                if ra is None or not (want - 3.0 <= ra <= want + args.slack + 2.0):
                    wrong.append("%s at %.1f s (want about %.0f)" % (ra, t - t_first, want))
            report.check(not wrong, "every Retry-After counts the seconds until the oldest "
                         "minute request leaves its window (+-2 s)",
                         "%d wrong: %s" % (len(wrong), ", ".join(wrong[:5])) if wrong else "")
        over = []
        for doc in stats.status_samples + ([status_doc] if status_doc else []):
            for a in doc.get("apis", []):
                lim, use = a.get("limits", {}), a.get("usage", {})
                for k in ("rpm", "rpd"):
                    if lim.get(k, -1) >= 0 and use.get(k, 0) > lim[k]:
                        over.append("%s %s %s/%s" % (a.get("id"), k, use.get(k), lim[k]))
        report.check(not over, "every /v1/status seen (%d) within the limits"
                     % (len(stats.status_samples) + 1), ", ".join(over[:10]))

        # state
        report.check(status_doc is not None, "/v1/status after the run answers 200",
                     "" if status_doc else str(r))
        # libcurl replays a request on a fresh connection when a reused one
        # dies before any answer: the mock then sees one client request twice
        # for one attempt the responder counted (doc/behaviour.md, Forwarding:
        # each attempt on a different endpoint; Limits and state, rule 1: each
        # attempt counted once).
        replays = {}
        for k, rs in recs.items():
            by = collections.defaultdict(list)
            for rec in rs:
                if rec[5] is not None:
                    by[rec[5]].append(rec)
            groups = [v for v in by.values() if len(v) > 1]
            extra = sum(len(v) - 1 for v in groups)
            after_close = sum(1 for v in groups for a, b in zip(v, v[1:])
                              if a[2] == "close" and a[6] >= 2 and b[6] == 1)
            closes_reused = sum(1 for rec in rs if rec[2] == "close" and rec[6] >= 2)
            replays[k] = (extra, after_close, closes_reused)
        n_replays = sum(v[0] for v in replays.values())
        rdetail = "; ".join(
            "%s: %d requests received twice, %d of them right after the mock closed a reused "
            "connection without answering (it closed %d reused connections so) and again on a "
            "new connection" % (k, e, a, c) for k, (e, a, c) in replays.items() if e or c)
        report.check(n_replays == 0,
                     "no upstream received the same client request twice", rdetail,
                     known=args.allow_replays)
        if day0 != day1:
            log("note: the day (%s) changed during the run: usage.rpd counts only today; "
                "the per-day comparisons are skipped" % TZ)
        else:
            diffs = []
            for k, rs in recs.items():
                u = state_by_id.get(k, {}).get("usage", {}).get("rpd")
                if u != len(rs) - replays[k][0]:
                    diffs.append("%s: state %s, mock %d (%d of them replays)"
                                 % (k, u, len(rs), replays[k][0]))
            report.check(not diffs, "usage.rpd of each endpoint = the attempts its mock "
                         "received (%s)" % ", ".join(
                             "%s %d%s" % (k, len(v), " - %d replays" % replays[k][0]
                                          if replays[k][0] else "")
                             for k, v in recs.items()),
                         "; ".join(diffs))
        tdiff = []
        for k in recs:
            tok = state_by_id.get(k, {}).get("tokens", {})
            got = [tok.get("prompt"), tok.get("completion"), tok.get("total")]
            if got != expected_tokens[k]:
                tdiff.append("%s: state %s, expected %s" % (k, got, expected_tokens[k]))
        report.check(not tdiff, "token totals = the usage of the answers the mocks completed",
                     "; ".join(tdiff))
        report.check(cli.returncode == 0 and len(rows) == 5,
                     "api-together --status exits 0 with 5 endpoints (state file consistent)",
                     "exit %d, stderr %r" % (cli.returncode, cli.stderr[-500:])
                     if cli.returncode or len(rows) != 5 else "")
        cdiff = []
        for k in recs:
            a, row = state_by_id.get(k, {}), rows.get(k)
            if row is None:
                cdiff.append("%s missing" % k)
                continue
            if (row["rpd"] != a.get("usage", {}).get("rpd")
                    or row["tokens"] != [a.get("tokens", {}).get(x)
                                         for x in ("prompt", "completion", "total")]):
                cdiff.append("%s: cli %s, /v1/status %s" % (k, row, a))
        report.check(not cdiff, "--status agrees with /v1/status (rpd, tokens)",
                     "; ".join(cdiff))

        # processes
        report.check(lighttpd_alive, "lighttpd still running")
        report.check(len(pids) == args.procs and pids0 == pids and pids_end == pids
                     and not (sampler.gone - {lighttpd_pid}),
                     "the same %d responders from start to end (none died or was restarted)"
                     % args.procs, "at start %s, after warm-up %s, at the end %s, gone %s"
                     % (pids0, pids, pids_end, sorted(sampler.gone)))
        for p, fig in flat_results:
            if fig is None:
                report.check(False, "responder %d sampled" % p)
                continue
            rs0, rs1 = fig["rss"]
            report.check(flat(rs0, rs1, 1024), "responder %d RSS flat: %.0f -> %.0f kB (limit %.0f)"
                         % (p, rs0, rs1, max(rs0 * 1.10, rs0 + 1024)))
            of0, of1, more_threads = fig["other"]
            limit = flat_limit(of0, 2) + FDS_PER_THREAD * more_threads
            report.check(of1 <= limit, "responder %d descriptors flat, upstream connections "
                         "aside: %.0f -> %.0f (limit %.0f%s)" % (
                             p, of0, of1, limit, ", %g more worker thread(s)" % more_threads
                             if more_threads else ""))
            n, name, threads = fig["ups"]
            report.check(n <= threads, "responder %d keeps at most one connection per worker "
                         "thread to each upstream: at most %d to %s with %d worker threads"
                         % (p, n, name, threads))
        # logs: one line per request (doc/behaviour.md, Logs), with the status
        # the client got
        levels, logged, odd = collections.Counter(), collections.Counter(), []
        try:
            with open(gw.responder_log_path, "rb") as f:
                rlog = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            rlog = []
        for line in rlog:
            m = LOG_LINE.match(line)
            if not m:
                odd.append(line)
                continue
            levels[m.group(1)] += 1
            m2 = LOG_CHAT.match(m.group(2))
            if m2:
                logged[(m2.group(1), int(m2.group(2)))] += 1
        log("")
        log("responder log: %d lines (%s), %d not in the log format" % (
            len(rlog), ", ".join("%s %d" % kv for kv in sorted(levels.items())), len(odd)))
        report.check(not odd and not levels.get("error"),
                     "responder log: every line well formed, no error line",
                     " | ".join(odd[:3] + [l for l in rlog if " error " in l][:3]))
        ldiff = sorted(set(logged) | set(stats.forwarded))
        ldiff = ["%s %s: log %d, clients %d" % (m, st, logged[(m, st)], stats.forwarded[(m, st)])
                 for m, st in ldiff if logged[(m, st)] != stats.forwarded[(m, st)]]
        report.check(not ldiff, "one log line per forwarded request, with the status the "
                     "client got (%d)" % sum(logged.values()), "; ".join(ldiff[:8]))
        with open(gw.errorlog_path, "rb") as f:
            elog = f.read().decode("utf-8", "replace").splitlines()
        crashes = [l for l in elog if "server started" not in l and "server stopped" not in l]
        report.check(not crashes, "lighttpd's error log: nothing but its start (no backend "
                     "died, none overloaded)", " | ".join(crashes[:5]))
        if args.verbose:
            log("--status:\n" + cli.stdout)
    except KeyboardInterrupt as e:
        log("soak: interrupted (%s)" % e)
        report.failed += 1
    except Exception as e:  # a broken run is a failed check, with its reason
        import traceback
        traceback.print_exc(file=sys.stdout)
        report.check(False, "the run completed", repr(e))
        if gw is not None and gw.dir:
            log(gw.log_tail(30))
    finally:
        overrun.set()
        if gw is not None:
            if report.failed:
                log("soak: logs of the failed run: %s" % (gw.dir if harness.KEEP_TMP else
                                                         "(API_TOGETHER_KEEP_TMP=1 keeps them)"))
            gw.stop()
        for m in mocks.values():
            m.stop()
    if report.known:
        log("%d known failure%s not counted (--allow-replays)"
            % (report.known, "" if report.known == 1 else "s"))
    log("%d passed, %d failed" % (report.passed, report.failed))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
