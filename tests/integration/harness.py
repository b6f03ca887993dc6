"""Harness for the integration tests: a real lighttpd with the responder behind
mod_fastcgi, in a temporary directory, plus HTTP helpers.

Python 3 standard library only.

    gw = Gateway({"server": {...}, "apis": [...]}).start()
    r = gw.request("GET", "/v1/models", key="sk-...")
    r.status, r.headers, r.body, r.json()
    s = gw.stream("POST", "/v1/chat/completions", body=..., key=...)
    s.events  -> [(monotonic time, b"data: ...")]
    gw.write_config({...})      # the responder reloads it on the next request
    gw.log_text()               # lighttpd's error log + the responder's stderr
    gw.stop()

Environment (set by make check; defaults fit a run by hand from the source dir):
API_TOGETHER_BIN, API_TOGETHER_TESTCLOCK_BIN, API_TOGETHER_SRCDIR, LIGHTTPD.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("API_TOGETHER_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("API_TOGETHER_BIN") or os.path.join(SRCDIR, "src", "api-together")
TESTCLOCK_BIN = (os.environ.get("API_TOGETHER_TESTCLOCK_BIN")
                 or os.path.join(SRCDIR, "tests", "api-together-testclock"))
LIGHTTPD = os.environ.get("LIGHTTPD") or "/usr/sbin/lighttpd"
KEEP_TMP = os.environ.get("API_TOGETHER_KEEP_TMP") == "1"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def package_version():
    """The version in AC_INIT of configure.ac, or None."""
    try:
        with open(os.path.join(SRCDIR, "configure.ac"), encoding="utf-8") as f:
            m = re.search(r"AC_INIT\(\[[^\]]*\],\s*\[([^\]]+)\]", f.read())
            return m.group(1) if m else None
    except OSError:
        return None


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


class Gateway:
    """lighttpd + the responder in a temporary directory."""

    def __init__(self, config, *, max_procs=2, mount="/", binary=None, clock=False,
                 tz=None, name="gw", raw_config=None, extra_env=None, state_bytes=None,
                 fastcgi_options=None, user=None, group=None, state_name="state.db"):
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
        self.fastcgi_options = fastcgi_options or {}  # more fastcgi.server options
        # server.username / server.groupname: lighttpd (started as root) drops to
        # them, so the responder runs unprivileged; the directory is chowned to them.
        self.user = user
        self.group = group
        self.state_name = state_name  # the state file's path below the directory
        self.dir = None
        self.port = None
        self.proc = None
        self._mtime = 0.0
        self._clock_offset = 0.0
        self.leftovers_after_term = None

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
        """lighttpd's own error log."""
        return self.path("error.log")

    @property
    def responder_log_path(self):
        """The responder's stderr (server.breakagelog)."""
        return self.path("responder.log")

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
        """Move the test clock forward (test-clock binary only)."""
        self._clock_offset += seconds
        tmp = self.path("clock.tmp")
        with open(tmp, "w") as f:
            f.write("%.3f\n" % self._clock_offset)
        os.replace(tmp, self.path("clock"))

    def _lighttpd_conf(self):
        mount = self.mount
        regex = "^" + re.escape(mount).replace("\\/", "/") + "(v1|health)(/|$)"
        env = {
            "API_TOGETHER_CONFIG": self.config_path,
            "API_TOGETHER_STATE": self.state_path,
            "API_TOGETHER_LOG_LEVEL": "debug",
        }
        if self.clock:
            env["API_TOGETHER_TEST_CLOCK_FILE"] = self.path("clock")
        if self.tz:
            env["TZ"] = self.tz
        env.update(self.extra_env)
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

    # -- life cycle
    def start(self, timeout=15):
        """Starts lighttpd; after stop(keep=True) it starts again on the same
        directory (config, state file, logs)."""
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("responder binary not found: %s" % self.binary)
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="api-together-it-%s-" % self.name)
            os.mkdir(self.path("docroot"))
            if self.clock:
                self.advance_clock(0)
            if self.state_bytes is not None:
                with open(self.state_path, "wb") as f:
                    f.write(self.state_bytes)
            if self.raw_config is not None:
                self.write_config(raw=self.raw_config)
            else:
                self.write_config()
        if self.user or self.group:
            self.chown_to_server_user(self.dir)
        last_err = None
        for _ in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            with open(self.path("lighttpd.conf"), "w") as f:
                f.write(self._lighttpd_conf())
            out = open(self.path("lighttpd.out"), "ab")
            self.proc = subprocess.Popen([LIGHTTPD, "-D", "-f", self.path("lighttpd.conf")],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True, cwd=self.dir)
            out.close()
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError as e:
                last_err = e
                self._kill_all()
                if "Address already in use" not in self.log_text():
                    break
        raise RuntimeError("%s did not start: %s\n%s" % (self.name, last_err, self.log_tail(40)))

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

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("lighttpd exited with %s" % self.proc.returncode)
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

    def responder_pids(self):
        """Pids of processes whose environment names this gateway's config."""
        want = ("API_TOGETHER_CONFIG=" + self.config_path).encode()
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % d, "rb") as f:
                    envs = f.read().split(b"\0")
            except OSError:
                continue
            if want in envs:
                pids.append(int(d))
        return pids

    def stop(self, grace=5.0, keep=False):
        """SIGTERM lighttpd, wait; record responder processes left, then kill
        them. keep=True keeps the directory for another start()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
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
        if not keep and not KEEP_TMP and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_all(self):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(5)
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
        for name in ("error.log", "responder.log", "lighttpd.out"):
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
               stop_after=None, absolute=False, content_type="application/json"):
        """Reads an answer line by line, noting when each line arrived. With
        stop_after=N the client closes the connection after N "data:" lines."""
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
