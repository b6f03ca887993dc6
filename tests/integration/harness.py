"""Harness for the integration tests: a real web server with the responder
behind it, in a temporary directory, plus HTTP helpers. Three servers:

    "lighttpd"    lighttpd + mod_fastcgi (it starts max_procs responders)
    "fcgid"       Apache 2.4 + mod_fcgid (it starts up to max_procs responders),
                  configured by the shipped apache/api-together-fcgid.conf.in
    "proxy_fcgi"  Apache 2.4 + mod_proxy_fcgi, configured by the shipped
                  apache/api-together-proxy-fcgi.conf.in, in front of one
                  `api-together --listen DIR/fcgi.sock` the harness runs itself

Python 3 standard library only.

    gw = Gateway({"server": {...}, "apis": [...]}).start()
    r = gw.request("GET", "/v1/models", key="sk-...")
    r.status, r.headers, r.body, r.json()
    s = gw.stream("POST", "/v1/chat/completions", body=..., key=...)
    s.events  -> [(monotonic time, b"data: ...")]
    gw.write_config({...})      # the responder reloads it on the next request
    gw.log_text()               # the server's error log + the responder's stderr
    gw.stop()

Environment (set by make check; defaults fit a run by hand from the source dir):
API_TOGETHER_BIN, API_TOGETHER_TESTCLOCK_BIN, API_TOGETHER_SRCDIR, LIGHTTPD,
APACHE2 (the apache2 / httpd binary), APACHE_MODULES (its modules folder),
REDIS_SERVER (the redis-server binary), API_TOGETHER_TEST_SERVER: the server
kind of a Gateway that names none (default "lighttpd"), and
API_TOGETHER_TEST_STORE: the store of a Gateway that names none, "gdbm"
(default: the state file in its directory) or "redis" (a redis-server of its
own, RedisServer below, handed to the responder as API_TOGETHER_STORE).

Timing and processes (issue 16): no verdict may hang on the machine's speed
or on the process the web server picks. What each case that looks at time
or processes rests on, in four kinds:

  still clock: the test-clock build's time is "@SECONDS", moved only by
    advance_clock: S02 window (both), S03 midnight (both), S04 cooldown,
    T17 (all three), O05 (moved past the window once its 429 is logged; the
    SDK's retry comes 3 s of real time later: the one margin left).
  each process on its own socket (fastcgi_request, process_sockets): S01
    rpm 7 at once (7 or 8 to each), S04 (failures in one, 503 from every
    one), T15 new model, T16 reload, M02 scrapes.
  waited for, not slept for (wait_log, Base.wait_for, 10 s deadlines that
    end only a failing wait): log lines (T18, T15, S07, S09, status page),
    usage and failure records (T13, S05, S08, F* errorCount), S05 file
    alone (the state file read alone until it has the counts), S07 lock
    held until released, F02 connection dropped, T12 client gone, S06 kill
    loop (until 10 kills and 100 answers), test_store_redis after a kill
    (until Redis dropped the child's connection), T12 events one by one
    (lockstep: the mock writes an event once the client has the last),
    B02 all requests at the mock, then the burst's threads gone (60 s).
  certain by construction: FIRST/LAST weights (T11, F*, H03, M01); S01
    rpd 5 (Retry-After bracketed by midnight measured before and after);
    T16 rpm exact (counts); T16 weights share (binomial(1000, 3/4) bounds
    that fail once in 10^12; weights ignored would pass once in 10^21);
    test_route's seeded generator; test_store's fixed times; the corpus
    (the mock records a request before answering it).

Real time is asserted only where it is the behaviour, each with its slack:
F02 silent upstream (>= timeout - 0.1 s, < timeout + 1.4 s: libcurl checks
the silence about once a second), F02 silent only endpoint (< 2.6 s for 1 s),
F02 slow within timeout (< 2.5 s for an answer at 1.5 s), F02 stall (gap
< 2.6 s for 1 s), F03 cut (< 2 s), F07 client gone (lag limits, < 1.6 s
after the last forwarded event), T11 timeout (< 2.8 s for 1 s), T12 client
gone (< 5 s), S07 lock wait (2.5-4.8 s for 3 s), S09 Redis (answers < 1 s
for storeTimeoutMs 300, back < 1.5 s), T19/T20 and S05 (processes gone 5 s
after SIGTERM), test_store_redis stall (150-1000 ms for 200 ms), test_quickstart's demo
stream (first to last event >= 0.4 s of the >= 1.5 s the demo upstream takes
to write them), soak descriptors (bounded by the threads and connections
sampled), B04 next request on a one-thread responder (< 1 s, where
libfcgi's close held the thread 2 s).
"""

import atexit
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("API_TOGETHER_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("API_TOGETHER_BIN") or os.path.join(SRCDIR, "src", "api-together")
TESTCLOCK_BIN = (os.environ.get("API_TOGETHER_TESTCLOCK_BIN")
                 or os.path.join(SRCDIR, "tests", "api-together-testclock"))
LIGHTTPD = os.environ.get("LIGHTTPD") or "/usr/sbin/lighttpd"
APACHE2 = (os.environ.get("APACHE2") or shutil.which("apache2") or shutil.which("httpd")
           or "/usr/sbin/apache2")
APACHE_MODULES = os.environ.get("APACHE_MODULES") or "/usr/lib/apache2/modules"
SERVER_KINDS = ("lighttpd", "fcgid", "proxy_fcgi")
DEFAULT_SERVER = os.environ.get("API_TOGETHER_TEST_SERVER") or "lighttpd"
REDIS_SERVER = (os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
                or "/usr/bin/redis-server")
STORE_KINDS = ("gdbm", "redis")
DEFAULT_STORE = os.environ.get("API_TOGETHER_TEST_STORE") or "gdbm"
KEEP_TMP = os.environ.get("API_TOGETHER_KEEP_TMP") == "1"


def shuffle_seed(argv):
    """The seed of the test order: "--shuffle SEED" (taken out of argv) or
    API_TOGETHER_TEST_SHUFFLE=SEED; "random" draws one. None: as listed."""
    seed = os.environ.get("API_TOGETHER_TEST_SHUFFLE") or None
    if "--shuffle" in argv:
        i = argv.index("--shuffle")
        if i + 1 >= len(argv):
            raise SystemExit("--shuffle needs a seed (a number, or random)")
        seed = argv[i + 1]
        del argv[i:i + 2]
    if seed == "random":
        seed = str(random.SystemRandom().randrange(1 << 32))
    return seed


def shuffled(suite, seed):
    """The cases of suite, with seed in an order drawn from it: the classes
    in a random order and each class's cases in a random order (each class
    still set up once). A case must not count on one that ran before it."""
    if seed is None:
        return suite
    rnd = random.Random(seed)
    by_class = {}

    def flat(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                flat(t)
            else:
                by_class.setdefault(type(t), []).append(t)
    flat(suite)
    groups = list(by_class.values())
    rnd.shuffle(groups)
    for g in groups:
        rnd.shuffle(g)
    return unittest.TestSuite(t for g in groups for t in g)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recv_to_end(sock):
    """All that sock receives until the peer closes it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def redis_missing():
    """None when the tests can start a redis-server, else why not."""
    if os.access(REDIS_SERVER, os.X_OK):
        return None
    return "redis-server not found at %s (Debian package redis-server)" % REDIS_SERVER


# Every RedisServer made: ended when the tests end, whatever happened (they
# run in sessions of their own, so nothing else would end them).
_REDIS_SERVERS = []


@atexit.register
def _close_redis_servers():
    for r in _REDIS_SERVERS:
        r.close()


class RedisError(Exception):
    """An error reply of Redis."""


class RedisServer:
    """A redis-server of the tests' own: on 127.0.0.1, a free port, no
    persistence (--save ''), in a temporary directory. stop() and start()
    again keep the port (a restart, empty: nothing was saved); pause() and
    resume() send SIGSTOP / SIGCONT (a stalled server); command() speaks RESP.

        r = RedisServer().start(); r.url -> "redis://127.0.0.1:PORT"
    """

    def __init__(self, name="redis"):
        self.name = name
        self.dir = None
        self.port = None
        self.proc = None
        _REDIS_SERVERS.append(self)

    @property
    def url(self):
        return "redis://127.0.0.1:%d" % self.port

    @property
    def log_path(self):
        return os.path.join(self.dir, "redis.log")

    def start(self, timeout=10):
        """Starts it (on the same port after a stop) and waits until it answers PING."""
        missing = redis_missing()
        if missing:
            raise RuntimeError(missing)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="api-together-%s-" % self.name)
        fixed = self.port is not None
        for _ in range(3):
            if not fixed:
                self.port = free_port()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
                 "--logfile", self.log_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, cwd=self.dir)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.command("PING") == "PONG":
                        return self
                except (OSError, RedisError):
                    pass
                time.sleep(0.02)
            self.stop()
            if fixed:
                break
        raise RuntimeError("redis-server did not start on port %s:\n%s"
                           % (self.port, self.log_tail()))

    def stop(self):
        """Ends it (SIGTERM, SIGKILL after 5 s); the directory and port stay."""
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        except OSError:
            pass
        self.proc = None

    def close(self):
        self.stop()
        if self.dir and not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except (OSError, TypeError):
            return ""

    def command(self, *args, timeout=3.0):
        """Sends one command; returns its reply (str, int, list, None), raises
        RedisError for an error reply and OSError when it cannot be reached."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(out)
            f = s.makefile("rb")
            return self._reply(f)

    def _reply(self, f):
        line = f.readline()
        if not line.endswith(b"\r\n"):
            raise OSError("connection closed by redis-server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply(f) for _ in range(n)]
        raise OSError("not a RESP answer: %r" % line)


# Modules each Apache kind loads (mod_unixd, for User/Group, is built in on Debian).
_APACHE_MODS = {
    "fcgid": ["mpm_event", "authz_core", "alias", "mime", "fcgid"],
    "proxy_fcgi": ["mpm_event", "authz_core", "mime", "proxy", "proxy_fcgi"],
}


def _module_file(name):
    return os.path.join(APACHE_MODULES, "mod_%s.so" % name)


def server_missing(kind):
    """None when the server of that kind can run here, else why not."""
    if kind not in SERVER_KINDS:
        return "unknown server kind %r (one of %s)" % (kind, ", ".join(SERVER_KINDS))
    if kind == "lighttpd":
        return None if os.access(LIGHTTPD, os.X_OK) else "lighttpd not found at %s" % LIGHTTPD
    if not os.access(APACHE2, os.X_OK):
        return "apache2 not found at %s" % APACHE2
    for m in _APACHE_MODS[kind]:
        if not os.path.exists(_module_file(m)):
            return "Apache module %s not found" % _module_file(m)
    return None


def apache_snippet(kind):
    """The text of the shipped snippet apache/*.conf.in of an Apache kind."""
    name = {"fcgid": "api-together-fcgid.conf.in",
            "proxy_fcgi": "api-together-proxy-fcgi.conf.in"}[kind]
    with open(os.path.join(SRCDIR, "apache", name), encoding="utf-8") as f:
        return f.read()


def mount_snippet(text, mount):
    """The snippet's URL patterns ("^/(v1|health|status)...",
    "^/((v1|health|status)...") moved below mount ("/llm/"): the one place a
    test adapts the shipped text."""
    if mount == "/":
        return text
    out, n = re.subn(r'"\^/(\(*)\((v1\|health[|a-z]*)\)', lambda m: '"^%s%s(%s)'
                     % (mount, m.group(1), m.group(2)), text)
    if n == 0:
        raise RuntimeError("no ^/(v1|health) pattern in the Apache snippet to move below %s"
                           % mount)
    return out


def package_version():
    """The version in AC_INIT of configure.ac, or None."""
    try:
        with open(os.path.join(SRCDIR, "configure.ac"), encoding="utf-8") as f:
            m = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


def _unprivileged_ids():
    """("nobody", its group) for a server started as root, or (None, None)."""
    import grp
    import pwd
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None, None
    for g in ("nogroup", "nobody"):
        try:
            grp.getgrnam(g)
            return "nobody", g
        except KeyError:
            pass
    return "nobody", None


def _descendants(root):
    """Pids of every process below root (by /proc/PID/stat parent links)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Response:
    """An HTTP answer: status, headers (list of (name, value)), raw body."""

    def __init__(self, method, path, status, reason, headers, body, elapsed):
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise AssertionError("body is not JSON (%s): %s" % (e, self.describe())) from None

    def text(self):
        return self.body.decode("utf-8", "replace")

    def describe(self, limit=1500):
        body = self.text()
        if len(body) > limit:
            body = body[:limit] + "...(%d bytes)" % len(self.body)
        hdrs = "; ".join("%s: %s" % kv for kv in self.headers)
        return "%s %s -> %s %s [%s] %s" % (self.method, self.path, self.status, self.reason,
                                           hdrs, body)

    __str__ = describe


class StreamResult:
    """A streamed answer: every line with its arrival time (time.monotonic())."""

    def __init__(self, method, path):
        self.method = method
        self.path = path
        self.status = None
        self.headers = []
        self.lines = []  # (t, raw line bytes)
        self.t_sent = None  # request written
        self.t_closed = None  # when the client closed early (stop_after)
        self.error = None

    @property
    def events(self):
        """(t, payload bytes) of every "data:" line."""
        out = []
        for t, line in self.lines:
            s = line.strip()
            if s.startswith(b"data:"):
                out.append((t, s[5:].strip()))
        return out

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def describe(self):
        body = b"".join(l for _, l in self.lines)[:1500].decode("utf-8", "replace")
        return "%s %s -> %s [%s] %d lines error=%s body=%s" % (
            self.method, self.path, self.status,
            "; ".join("%s: %s" % kv for kv in self.headers), len(self.lines), self.error, body)

    __str__ = describe


def _body_bytes(body):
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _headers_list(headers, key, body, content_type):
    out = []
    if key is not None:
        out.append(("Authorization", "Bearer " + key))
    if headers:
        items = headers.items() if isinstance(headers, dict) else headers
        out.extend(items)
    names = {k.lower() for k, _ in out}
    if body is not None and "content-type" not in names and content_type:
        out.append(("Content-Type", content_type))
    return out


def _send(conn, method, path, headers, body, chunked=False):
    names = {k.lower() for k, _ in headers}
    conn.putrequest(method, path, skip_host="host" in names, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        step = 7919  # odd-sized chunks
        for i in range(0, len(body or b""), step):
            part = body[i:i + step]
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        return
    if body is not None and "content-length" not in names:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body if body else None)


# FastCGI (the protocol's version 1): record types and the responder role.
_FCGI_BEGIN, _FCGI_END, _FCGI_PARAMS, _FCGI_STDIN, _FCGI_STDOUT = 1, 3, 4, 5, 6
_FCGI_RESPONDER = 1


def _fcgi_record(kind, content, req_id=1):
    return (bytes([1, kind, req_id >> 8, req_id & 0xFF, len(content) >> 8, len(content) & 0xFF,
                   0, 0]) + content)


def _fcgi_pair(name, value):
    out = b""
    for x in (name, value):
        n = len(x)
        out += bytes([n]) if n < 128 else (n | 0x80000000).to_bytes(4, "big")
    return out + name + value


def fastcgi_encode(method, path, body=None, headers=None, key=None,
                   content_type="application/json"):
    """The records a web server sends for one request (request id 1): the
    parameters, then the body and the end of its stream."""
    body = _body_bytes(body) or b""
    hdrs = _headers_list(headers, key, body or None, content_type)
    params = [("REQUEST_METHOD", method), ("REQUEST_URI", path), ("SCRIPT_NAME", path),
              ("SERVER_PROTOCOL", "HTTP/1.1"), ("GATEWAY_INTERFACE", "CGI/1.1"),
              ("REMOTE_ADDR", "127.0.0.1"), ("SERVER_NAME", "localhost"),
              ("SERVER_PORT", "80"), ("HTTP_HOST", "localhost"),
              ("CONTENT_LENGTH", str(len(body)))]
    for k, v in hdrs:
        if k.lower() == "content-type":
            params.append(("CONTENT_TYPE", v))
        else:
            params.append(("HTTP_" + k.upper().replace("-", "_"), v))
    pairs = b"".join(_fcgi_pair(k.encode(), v.encode()) for k, v in params)
    out = _fcgi_record(_FCGI_BEGIN, bytes([0, _FCGI_RESPONDER, 0, 0, 0, 0, 0, 0]))
    for i in range(0, len(pairs), 65535):
        out += _fcgi_record(_FCGI_PARAMS, pairs[i:i + 65535])
    out += _fcgi_record(_FCGI_PARAMS, b"")
    for i in range(0, len(body), 65535):
        out += _fcgi_record(_FCGI_STDIN, body[i:i + 65535])
    out += _fcgi_record(_FCGI_STDIN, b"")
    return out


def fastcgi_answer(f, method, path, t0):
    """The answer read from f (a connection's file) up to the end of the
    request, as a Response; t0: when the request was sent (time.monotonic)."""
    stdout = b""
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise OSError("FastCGI: closed before the end of the request")
        n, pad = (head[4] << 8) | head[5], head[6]
        content = f.read(n + pad)[:n]
        if head[1] == _FCGI_STDOUT:
            stdout += content
        elif head[1] == _FCGI_END:
            break
    head, _, data = stdout.partition(b"\r\n\r\n")
    status, reason, got = 200, "OK", []
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            code, _, reason = value.strip().partition(" ")
            status = int(code)
        elif name:
            got.append((name, value.strip()))
    return Response(method, path, status, reason, got, data, time.monotonic() - t0)


def fastcgi_request(socket_path, method, path, body=None, headers=None, key=None, timeout=30,
                    content_type="application/json"):
    """One request straight to the responder listening on socket_path (a
    Unix socket), speaking FastCGI as the web server would: so a test
    reaches the process it names, not the one a web server chose. path is
    the whole URI path; the answer is a Response, as of Gateway.request."""
    out = fastcgi_encode(method, path, body, headers, key, content_type)
    t0 = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        # A blocking connect: it waits for room in the listen queue (mod_fcgid
        # keeps it short), where a non-blocking one fails with EAGAIN.
        s.connect(socket_path)
        s.settimeout(timeout)
        s.sendall(out)
        return fastcgi_answer(s.makefile("rb"), method, path, t0)


class Gateway:
    """A web server (server: "lighttpd", "fcgid" or "proxy_fcgi"; by default
    API_TOGETHER_TEST_SERVER or "lighttpd") + the responder in a temporary
    directory. max_procs is lighttpd's max-procs, mod_fcgid's
    FcgidMaxProcessesPerClass (one request at a time each), and means nothing
    to proxy_fcgi (one --listen process, API_TOGETHER_THREADS threads)."""

    def __init__(self, config, *, max_procs=2, mount="/", binary=None, clock=False,
                 tz=None, name="gw", raw_config=None, extra_env=None, state_bytes=None,
                 fastcgi_options=None, user=None, group=None, state_name="state.db",
                 server=None, apache_lines="", store=None, redis=None):
        self.server = server or DEFAULT_SERVER
        if self.server not in SERVER_KINDS:
            raise ValueError("unknown server kind %r" % self.server)
        # The store: "gdbm" (the state file below) or "redis": the RedisServer
        # given (shared, e.g. by two hosts; the caller stops it) or one of its
        # own, started with the gateway and stopped with it.
        self.store = "redis" if redis is not None else (store or DEFAULT_STORE)
        if self.store not in STORE_KINDS:
            raise ValueError("unknown store kind %r" % self.store)
        self.redis = redis
        self.own_redis = False
        self.config = config
        self.raw_config = raw_config
        self.max_procs = max_procs
        self.mount = mount if mount.endswith("/") else mount + "/"
        self.binary = binary or BIN
        self.clock = clock
        self.tz = tz
        self.name = name
        self.extra_env = extra_env or {}
        self.state_bytes = state_bytes  # written to the state file before start
        self.fastcgi_options = fastcgi_options or {}  # more fastcgi.server options (lighttpd)
        self.apache_lines = apache_lines  # more httpd.conf lines, after the snippet (Apache)
        # server.username / server.groupname: lighttpd (started as root) drops to
        # them, so the responder runs unprivileged; the directory is chowned to them.
        # Apache's User / Group likewise; as root they default to nobody / nogroup
        # (Apache would run its children as uid -1 otherwise), and the --listen
        # responder of proxy_fcgi runs as them too, as with the shipped systemd unit.
        if self.is_apache and os.geteuid() == 0 and not (user or group):
            user, group = _unprivileged_ids()
        self.user = user
        self.group = group
        self.state_name = state_name  # the state file's path below the directory
        self.dir = None
        self.port = None
        self.proc = None  # the web server
        self.listener = None  # proxy_fcgi: the api-together --listen process
        self._mtime = 0.0
        self._clock_offset = 0.0
        self._clock_base = float(int(time.time()))
        self.leftovers_after_term = None

    @property
    def is_apache(self):
        return self.server in ("fcgid", "proxy_fcgi")

    # -- paths
    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def config_path(self):
        return self.path("apis.json")

    @property
    def state_path(self):
        return self.path(self.state_name)

    @property
    def errorlog_path(self):
        """The web server's own error log."""
        return self.path("error.log")

    @property
    def responder_log_path(self):
        """The responder's stderr: lighttpd's server.breakagelog; Apache's ErrorLog
        under mod_fcgid (it hands the responder that file as stderr); the --listen
        process's stderr under mod_proxy_fcgi."""
        if self.server == "fcgid":
            return self.errorlog_path
        return self.path("responder.log")

    @property
    def socket_path(self):
        return self.path("fcgi.sock")

    @property
    def exec_path(self):
        """The program the server starts. For fcgid a copy of the binary as
        DIR/bin/api-together, made at each start: mod_fcgid tells programs apart
        by inode, so a rebuild during a run would start a second set of
        processes beside the first; and the snippet's <Files "api-together">
        then applies to the test-clock build too."""
        if self.server == "fcgid":
            return self.path(os.path.join("bin", "api-together"))
        return self.binary

    # -- config and clock
    def write_config(self, config=None, raw=None):
        """Replace apis.json (new inode, strictly later mtime)."""
        text = raw if raw is not None else json.dumps(config if config is not None else self.config,
                                                      indent=2)
        if raw is None and config is not None:
            self.config = config
        tmp = self.config_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        m = max(time.time(), self._mtime + 2.0)
        self._mtime = m
        os.utime(tmp, (m, m))
        os.replace(tmp, self.config_path)

    def advance_clock(self, seconds):
        """Move the test clock forward (test-clock binary only). The clock
        stands still but for these moves: the file holds "@SECONDS" since
        the epoch, from a whole second the gateway was made in, so the
        responder's time is the test's whatever the machine took."""
        self._clock_offset += seconds
        tmp = self.path("clock.tmp")
        with open(tmp, "w") as f:
            f.write("@%.3f\n" % self.clock_now())
        os.replace(tmp, self.path("clock"))

    def clock_now(self):
        """The responder's time, in seconds since the epoch (test clock)."""
        return self._clock_base + self._clock_offset

    def responder_env(self):
        """The variables the responder gets (bin-environment, FcgidInitialEnv, or
        the environment of the --listen process)."""
        env = {
            "API_TOGETHER_CONFIG": self.config_path,
            "API_TOGETHER_STATE": self.state_path,
            "API_TOGETHER_LOG_LEVEL": "debug",
        }
        if self.clock:
            env["API_TOGETHER_TEST_CLOCK_FILE"] = self.path("clock")
        if self.tz:
            env["TZ"] = self.tz
        if self.store == "redis" and self.redis is not None:
            env["API_TOGETHER_STORE"] = self.redis.url
        # A sanitizer build's settings (make sanitizer-check): mod_fcgid passes on no others.
        env.update({k: v for k, v in os.environ.items() if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")})
        env.update(self.extra_env)
        return env

    def _lighttpd_conf(self):
        mount = self.mount
        regex = "^" + re.escape(mount).replace("\\/", "/") + "(v1|health|status|metrics)(/|$)"
        env = self.responder_env()
        priv = ""
        if self.user:
            priv += 'server.username = "%s"\n' % self.user
        if self.group:
            priv += 'server.groupname = "%s"\n' % self.group
        env_lines = "".join('\t\t\t"%s" => "%s",\n' % (k, v) for k, v in env.items())
        opt_lines = "".join('\t\t"%s" => "%s",\n' % (k, v)
                            for k, v in self.fastcgi_options.items())
        return """# generated by tests/integration/harness.py
server.modules += ( "mod_fastcgi" )
server.port = {port}
server.bind = "127.0.0.1"
server.document-root = "{dir}/docroot"
server.errorlog = "{dir}/error.log"
# The responder's stderr: without this it is lighttpd's own stderr (-D) or
# /dev/null (daemon mode). (The same file as server.errorlog does not work.)
server.breakagelog = "{dir}/responder.log"
server.pid-file = "{dir}/lighttpd.pid"
server.upload-dirs = ( "{dir}" )
server.stream-response-body = 1
server.stream-request-body = 0
server.max-request-size = 20480
{priv}
$HTTP["url"] =~ "{regex}" {{
	fastcgi.server = ( "{mount}" => ((
		"socket" => "{dir}/fcgi.sock",
		"bin-path" => "{binary}",
		"max-procs" => {max_procs},
		"check-local" => "disable",
{opts}		"bin-environment" => (
{env}		),
	)) )
}}
""".format(port=self.port, dir=self.dir, regex=regex, mount=mount, binary=self.binary,
           max_procs=self.max_procs, env=env_lines, opts=opt_lines, priv=priv)

    def _apache_conf(self):
        """httpd.conf: a minimal server around the shipped snippet, its
        placeholders filled in, its patterns moved below the mount point; the
        test-only lines come after it (later settings win)."""
        snippet = apache_snippet(self.server)
        subst = {
            "@API_TOGETHER_BIN@": self.exec_path,
            "@API_TOGETHER_BINDIR@": os.path.dirname(self.exec_path),
            "@API_TOGETHER_CONFIG@": self.config_path,
            "@API_TOGETHER_STATE@": self.state_path,
            "@API_TOGETHER_SOCKET@": self.socket_path,
        }
        for k, v in subst.items():
            snippet = snippet.replace(k, v)
        left = re.findall(r"@[A-Z_]+@", snippet)
        if left:
            raise RuntimeError("placeholders the harness does not know in the snippet: %s"
                               % sorted(set(left)))
        with open(self.path("snippet.conf"), "w", encoding="utf-8") as f:
            f.write(mount_snippet(snippet, self.mount))
        mods = "".join('LoadModule %s_module "%s"\n' % (m, _module_file(m))
                       for m in _APACHE_MODS[self.server])
        priv = ""
        if self.user:
            priv += 'User %s\n' % self.user
        if self.group:
            priv += 'Group %s\n' % self.group
        test_lines = ""
        if self.server == "fcgid":
            # The responder's environment: every variable the harness sets (the
            # snippet's FcgidInitialEnv lines come first; a later one wins).
            test_lines += "".join('FcgidInitialEnv %s "%s"\n' % kv
                                  for kv in self.responder_env().items())
            test_lines += ('FcgidMaxProcessesPerClass {procs}\n'
                           'FcgidIPCDir "{dir}/fcgid"\n'
                           'FcgidProcessTableFile "{dir}/fcgid_shm"\n'
                           ).format(procs=self.max_procs, dir=self.dir)
        test_lines += self.apache_lines
        return """# generated by tests/integration/harness.py ({kind})
ServerRoot "{dir}"
DefaultRuntimeDir "{dir}"
Listen 127.0.0.1:{port}
ServerName localhost
PidFile "{dir}/apache.pid"
ErrorLog "{dir}/error.log"
LogLevel {loglevel}
{mods}{priv}TypesConfig /etc/mime.types
Timeout 60
# What a stock Apache denies (Debian's apache2.conf): the snippet must open
# up what it serves itself.
<Directory />
	Options FollowSymLinks
	AllowOverride None
	Require all denied
</Directory>
DocumentRoot "{dir}/docroot"
<Directory "{dir}/docroot">
	Require all granted
</Directory>

# --- the shipped snippet, placeholders filled in (snippet.conf)
Include "{dir}/snippet.conf"

# --- test-only settings
{test}""".format(kind=self.server, dir=self.dir, port=self.port, mods=mods, priv=priv,
                 test=test_lines,
                 # mod_fcgid notes each start and end of a responder process
                 loglevel="warn fcgid:info" if self.server == "fcgid" else "warn")

    # -- life cycle
    def start(self, timeout=15):
        """Starts the web server (and, for proxy_fcgi, the --listen responder);
        after stop(keep=True) it starts again on the same directory (config,
        state file, logs)."""
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("responder binary not found: %s" % self.binary)
        missing = server_missing(self.server)
        if missing:
            raise RuntimeError(missing)
        if self.store == "redis" and self.redis is None:
            self.redis = RedisServer("redis-%s" % self.name).start()
            self.own_redis = True
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="api-together-it-%s-" % self.name)
            os.mkdir(self.path("docroot"))
            if self.server == "fcgid":
                os.mkdir(self.path("fcgid"))
            if self.clock:
                self.advance_clock(0)
            if self.state_bytes is not None:
                with open(self.state_path, "wb") as f:
                    f.write(self.state_bytes)
            if self.raw_config is not None:
                self.write_config(raw=self.raw_config)
            else:
                self.write_config()
        if self.exec_path != self.binary:
            os.makedirs(os.path.dirname(self.exec_path), exist_ok=True)
            shutil.copy2(self.binary, self.exec_path + ".tmp")
            os.replace(self.exec_path + ".tmp", self.exec_path)
        if self.user or self.group:
            self.chown_to_server_user(self.dir)
        last_err = None
        for _ in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            try:
                if self.server == "proxy_fcgi":
                    self._start_listener()
                self._start_server()
                self._wait_ready(timeout)
                return self
            except RuntimeError as e:
                last_err = e
                self._kill_all()
                if "Address already in use" not in self.log_text():
                    break
        raise RuntimeError("%s (%s) did not start: %s\n%s" % (self.name, self.server, last_err,
                                                               self.log_tail(40)))

    def _start_server(self):
        if self.server == "lighttpd":
            conf, out_name = self.path("lighttpd.conf"), "lighttpd.out"
            text = self._lighttpd_conf()
            argv = [LIGHTTPD, "-D", "-f", conf]
        else:
            conf, out_name = self.path("httpd.conf"), "apache.out"
            text = self._apache_conf()
            argv = [APACHE2, "-f", conf, "-DFOREGROUND"]
        with open(conf, "w") as f:
            f.write(text)
        out = open(self.path(out_name), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True, cwd=self.dir)
        out.close()

    def _start_listener(self, timeout=10):
        """proxy_fcgi: `api-together --listen DIR/fcgi.sock`, as the server user,
        its stderr to responder.log; returns once the socket takes connections."""
        env = dict(os.environ)
        env.update(self.responder_env())
        kw = {}
        if os.geteuid() == 0 and (self.user or self.group):
            uid, gid = self.server_ids()
            if uid != -1:
                kw["user"] = uid
            if gid != -1:
                kw["group"] = gid
                kw["extra_groups"] = []
        log = open(self.responder_log_path, "ab")
        self.listener = subprocess.Popen([self.binary, "--listen", self.socket_path],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, cwd=self.dir, env=env, **kw)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listener.poll() is not None:
                raise RuntimeError("api-together --listen exited with %s"
                                   % self.listener.returncode)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket_path)
                return
            except OSError:
                time.sleep(0.02)
            finally:
                s.close()
        raise RuntimeError("api-together --listen: no socket %s within %ss"
                           % (self.socket_path, timeout))

    def server_ids(self):
        """(uid, gid) of server.username / server.groupname (-1 when unset)."""
        import grp
        import pwd
        uid = pwd.getpwnam(self.user).pw_uid if self.user else -1
        gid = grp.getgrnam(self.group).gr_gid if self.group else -1
        return uid, gid

    def chown_to_server_user(self, path):
        """Gives path (and everything below it) to server.username/groupname."""
        uid, gid = self.server_ids()
        for root, dirs, files in os.walk(path):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.lchown(n, uid, gid)

    def restart_listener(self, wait=5.0):
        """proxy_fcgi: once the --listen responder is gone (it may take up to
        wait seconds to go), starts it again, as its supervisor (systemd's
        Restart=) would; True if it was started."""
        if self.server != "proxy_fcgi" or self.dir is None:
            return False
        if self.listener is not None:
            try:
                self.listener.wait(wait)
            except subprocess.TimeoutExpired:
                return False
        self._start_listener()
        return True

    def process_sockets(self):
        """{pid: the Unix socket it listens on} of every responder process,
        for fastcgi_request. lighttpd and mod_fcgid hand each process its own
        listening socket as descriptor 0 (FastCGI's rule), found by its
        inode in /proc/net/unix; the --listen process listens on
        socket_path."""
        paths = {}
        try:
            with open("/proc/net/unix") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if len(fields) >= 8:
                        paths[fields[6]] = fields[7]
        except OSError:
            pass
        out = {}
        for pid in self.responder_pids():
            if self.listener is not None and pid == self.listener.pid:
                out[pid] = self.socket_path
                continue
            try:
                m = re.match(r"socket:\[(\d+)\]$", os.readlink("/proc/%d/fd/0" % pid))
            except OSError:
                continue
            if m and m.group(1) in paths:
                out[pid] = paths[m.group(1)]
        return out

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s" % (self.server_label,
                                                         self.proc.returncode))
            try:
                r = self.request("GET", "/health", timeout=3)
                last = r
                if r.status in (200, 503) and (r.header("content-type") or "").startswith(
                        "application/json"):
                    return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("no answer from /health within %ss (last: %s)" % (timeout, last))

    @property
    def server_label(self):
        return {"lighttpd": "lighttpd", "fcgid": "Apache (mod_fcgid)",
                "proxy_fcgi": "Apache (mod_proxy_fcgi)"}[self.server]

    def responder_pids(self):
        """Pids of the responder processes: those whose environment names this
        gateway's config (lighttpd's bin-environment, mod_fcgid's
        FcgidInitialEnv, the --listen process's environment; this still finds
        them once their web server is gone), plus, for fcgid, processes of the
        binary below Apache, and for proxy_fcgi the --listen process."""
        want = ("API_TOGETHER_CONFIG=" + self.config_path).encode()
        pids = set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % d, "rb") as f:
                    envs = f.read().split(b"\0")
            except OSError:
                continue
            if want in envs:
                pids.add(int(d))
        if self.server == "fcgid" and self.proc is not None and self.proc.poll() is None:
            binary = os.path.realpath(self.exec_path)
            for pid in _descendants(self.proc.pid):
                try:
                    if os.path.realpath("/proc/%d/exe" % pid) == binary:
                        pids.add(pid)
                except OSError:
                    pass
        if self.listener is not None and self.listener.poll() is None:
            pids.add(self.listener.pid)
        return sorted(pids)

    def stop(self, grace=5.0, keep=False):
        """SIGTERM the web server (and the --listen responder), wait; record
        responder processes left, then kill them. keep=True keeps the directory
        for another start()."""
        if self.proc is None and self.listener is None:
            if not keep:
                self._close_own_redis()
            return
        for p in (self.proc, self.listener):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.proc, self.listener):
            if p is not None:
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
        deadline = time.monotonic() + grace
        left = self.responder_pids()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.responder_pids()
        self.leftovers_after_term = left
        self._kill_all()
        self.proc = None
        self.listener = None
        if not keep:
            self._close_own_redis()
        if not keep and not KEEP_TMP and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _close_own_redis(self):
        if self.own_redis and self.redis is not None:
            self.redis.close()
            self.redis = None
            self.own_redis = False

    def _kill_all(self):
        for p in (self.proc, self.listener):
            if p is None:
                continue
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.responder_pids() if self.dir else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    # -- logs
    def log_text(self):
        out = []
        for name in ("error.log", "responder.log", "lighttpd.out", "apache.out"):
            try:
                with open(self.path(name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except (OSError, TypeError):
                pass
        return "".join(out)

    def log_size(self):
        try:
            return os.path.getsize(self.responder_log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.responder_log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, offset, until, timeout=10.0):
        """The responder's log since offset, once until(text) holds (or at the
        deadline, for the caller's assertion to report): a responder writes a
        request's line after its answer, so a client can read the log first."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_since(offset)
            if until(text) or time.monotonic() >= deadline:
                return text
            time.sleep(0.02)

    def log_tail(self, n=25):
        try:
            with open(self.responder_log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except (OSError, TypeError):
            lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    # -- HTTP
    def url_path(self, path):
        """path below the mount: "/v1/models" -> "/llm/v1/models"."""
        return self.mount.rstrip("/") + path

    def connection(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, key=None, timeout=30,
                absolute=False, content_type="application/json", chunked=False):
        """One request on a fresh connection. path is below the mount unless
        absolute; chunked sends the body with Transfer-Encoding: chunked."""
        full = path if absolute else self.url_path(path)
        body = _body_bytes(body)
        hdrs = _headers_list(headers, key, body, content_type)
        conn = self.connection(timeout)
        t0 = time.monotonic()
        try:
            _send(conn, method, full, hdrs, body, chunked)
            resp = conn.getresponse()
            data = resp.read()
            return Response(method, full, resp.status, resp.reason, resp.getheaders(), data,
                            time.monotonic() - t0)
        finally:
            conn.close()

    def stream(self, method, path, body=None, headers=None, key=None, timeout=30,
               stop_after=None, absolute=False, content_type="application/json",
               on_data=None):
        """Reads an answer line by line, noting when each line arrived. With
        stop_after=N the client closes the connection after N "data:" lines;
        on_data(n) is called as the n-th "data:" line arrives."""
        full = path if absolute else self.url_path(path)
        body = _body_bytes(body)
        hdrs = _headers_list(headers, key, body, content_type)
        res = StreamResult(method, full)
        conn = self.connection(timeout)
        try:
            _send(conn, method, full, hdrs, body)
            res.t_sent = time.monotonic()
            resp = conn.getresponse()
            res.status = resp.status
            res.headers = resp.getheaders()
            n_data = 0
            while True:
                line = resp.readline()
                if not line:
                    break
                res.lines.append((time.monotonic(), line))
                if line.startswith(b"data:"):
                    n_data += 1
                    if on_data is not None:
                        on_data(n_data)
                    if stop_after is not None and n_data >= stop_after:
                        try:
                            conn.sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        conn.close()
                        res.t_closed = time.monotonic()
                        break
        except (OSError, http.client.HTTPException) as e:
            res.error = repr(e)
        finally:
            conn.close()
        return res


class Checks:
    """Named checks of a script-style test (one long scenario, not unittest
    cases), printed as TAP: checks.add(name, ok, diag) as it goes, then
    checks.run(main) runs main, counts a crash as one failed check with its
    reason, prints the plan and exits 0 only when every check passed."""

    def __init__(self):
        self.results = []

    def add(self, name, ok, diag=""):
        self.results.append((name, bool(ok), diag))
        return bool(ok)

    def all_passed(self):
        return all(ok for _, ok, _ in self.results)

    def run(self, main, what):
        try:
            main()
        except Exception as e:  # a crash is one failed check, with its reason
            self.add("%s runs to the end" % what, False, repr(e))
        for i, (name, ok, diag) in enumerate(self.results, 1):
            print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
            if not ok and diag:
                for line in str(diag).splitlines():
                    print("# " + line)
        print("1..%d" % len(self.results))
        sys.exit(0 if self.results and self.all_passed() else 1)
