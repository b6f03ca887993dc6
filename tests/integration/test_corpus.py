#!/usr/bin/env python3
"""The hostile-request corpus (tests/hostile/*.req) against the responder behind
a real web server (lighttpd by default; API_TOGETHER_TEST_SERVER as in
test_http.py picks fcgid or proxy_fcgi).

Each .req file is one raw HTTP/1.1 request with a few "# key: value" lines
in front saying what must come of it (tests/hostile/README.md describes the
format). Every case is sent on its own connection over a raw socket, and:

- the answer is the one the case allows: from the responder, an OpenAI-shaped
  error with the expected status and code; from the web server (when the
  case lets it answer itself), a 4xx; from the upstream (when the case may be
  forwarded), the mock's own refusal. Never a 5xx, unless a case names it
  (lighttpd's 501 for a method or coding it does not know);
- no responder process died (the pids before are all still there);
- nothing changed: the endpoint's RPD usage grew by exactly the requests it
  was sent, its token totals are unchanged (so no reset went through), its
  failure run is 0 and it is not cooling down;
- the mock upstream received nothing for a case that must not be forwarded;
  what it did receive carries the endpoint's key and Host, no client key, no
  header the gateway must drop, no CR/LF/NUL in a header, no smuggled
  X-Injected header, the path exactly as the client sent it, and the body as
  the case says;
- no answer shows the upstream key, and no answer has an X-Injected header.

The mock upstream answers every request with 400 {"error":{"code":
"mock_refused"}}, so a case that is forwarded still ends in a 4xx and adds
no tokens. One endpoint serves "m-up" and maps "m" to it.

Prints TAP; Python 3 standard library only. By hand:

    [API_TOGETHER_TEST_SERVER=fcgid] python3 tests/integration/test_corpus.py [-v] [case-name ...]
"""

import base64
import glob
import json
import os
import re
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402
from mock_upstream import MockUpstream, closed_port  # noqa: E402

SERVER = harness.DEFAULT_SERVER
CORPUS = os.path.join(harness.SRCDIR, "tests", "hostile")
CLIENT_KEY = th.CLIENT_KEY
UPSTREAM_KEY = th.new_key("sk-up-corpus-")
API_ID = "corpus-ep"
SERVED, MAPPED = "m-up", "m"
MAX_BODY = 4 * 1024 * 1024

# Codes the responder answers with (src/response.c): an error carrying one of
# these, with no X-Mock-Name header, came from the gateway itself.
GATEWAY_CODES = {"invalid_api_key", "request_too_large", "invalid_json", "invalid_request",
                 "invalid_path", "not_forwarded",
                 "incomplete_body", "method_not_allowed", "not_found", "model_not_found",
                 "api_not_found", "rate_limit_exceeded", "no_available_api",
                 "upstream_unreachable", "config_error", "state_unavailable", "internal_error",
                 "key_expired", "admin_only", "model_not_allowed", "client_rate_limited"}
MOCK_CODE = "mock_refused"

# Headers that never reach an upstream, whatever the case (doc/behaviour.md,
# Forwarding), plus the marker every injection case tries to smuggle in.
ALWAYS_ABSENT = ("X-Api-Key", "Cookie", "Proxy-Authorization", "Proxy-Connection",
                 "X-Injected")

# The JSON nested 1000 deep that a case forwards: the mock (a thread of this
# process) and check_forwarded parse it.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 4000))

OUTCOMES = {}  # case name -> "status source attempts=N", printed with -v
METHOD_CASE = {}  # test method name -> case name

META_KEYS = {"expect", "web", "forward", "upstream-model", "upstream-path", "upstream-body",
             "upstream-body-lacks", "upstream-absent", "send", "no-answer", "body-crlf",
             "raw", "line-ends", "known-bug", "servers", "timeout"}


# ---------------------------------------------------------------------------
# The .req format

class Case:
    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.description = []
        self.meta = {}
        self.head_lines = []
        self.body = ""

    def get(self, key, default=None):
        """key's value, a per-server "key@server" line first."""
        return self.meta.get("%s@%s" % (key, SERVER), self.meta.get(key, default))

    @property
    def forward(self):
        return self.get("forward", "never")

    def expects(self):
        """[(status, code or None)] the responder may answer with."""
        out = []
        for alt in (self.get("expect") or "").split("|"):
            words = alt.split()
            if words:
                out.append((int(words[0]), words[1] if len(words) > 1 else None))
        return out

    def web_allows(self, status):
        """True when the web server may answer this case itself with status."""
        for w in (self.get("web") or "").replace(",", " ").split():
            if w == "4xx" and 400 <= status < 500:
                return True
            if w.isdigit() and int(w) == status:
                return True
        return False

    def list(self, key):
        return [x.strip() for x in (self.get(key) or "").split(",") if x.strip()]


def parse_case(path):
    name = os.path.basename(path)[:-len(".req")]
    c = Case(name, path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        text = lines[i][1:].strip()
        m = re.match(r"^([a-z-]+(?:@[a-z_]+)?):\s*(.*)$", text)
        if m and m.group(1).split("@")[0] in META_KEYS:
            c.meta[m.group(1)] = m.group(2).strip()
        else:
            c.description.append(text)
        i += 1
    while i < len(lines) and lines[i] != "":
        c.head_lines.append(lines[i])
        i += 1
    rest = lines[i + 1:] if i < len(lines) else []
    body = "\n".join(rest)
    if body.endswith("\n"):
        body = body[:-1]  # the file's own last newline
    c.body = body
    unknown = [k for k in c.meta if k.split("@")[0] not in META_KEYS]
    if unknown or not c.head_lines:
        raise ValueError("%s: bad case file (%s)" % (path, unknown or "no request line"))
    return c


def load_corpus():
    return [parse_case(p) for p in sorted(glob.glob(os.path.join(CORPUS, "*.req")))]


_PH = re.compile(r"\{(?:x([0-9a-fA-F]{2})|REPEAT ([0-9]+) |([A-Z][A-Z0-9_]*)([+-][0-9]+)?)")


def expand(template, values):
    """Bytes of template with its placeholders filled in: {xHH} a byte,
    {NAME} / {NAME+N} a value, {REPEAT N "json string"} the string N times
    ("{i}" in it counts 1..N). Any other "{" is itself."""
    out = bytearray()
    i = 0
    dec = json.JSONDecoder()
    while True:
        j = template.find("{", i)
        if j < 0:
            out += template[i:].encode("utf-8")
            return bytes(out)
        out += template[i:j].encode("utf-8")
        m = _PH.match(template, j)
        if m is None:
            out += b"{"
            i = j + 1
            continue
        if m.group(1) is not None:
            out.append(int(m.group(1), 16))
            i = m.end() + 1
            if template[m.end()] != "}":
                raise ValueError("bad {xHH} at %d" % j)
        elif m.group(2) is not None:
            text, end = dec.raw_decode(template, m.end())
            if template[end:end + 1] != "}":
                raise ValueError("{REPEAT} not closed at %d" % j)
            n = int(m.group(2))
            if "{i}" in text:
                out += "".join(text.replace("{i}", str(k)) for k in range(1, n + 1)).encode("utf-8")
            else:
                out += text.encode("utf-8") * n
            i = end + 1
        else:
            if template[m.end():m.end() + 1] != "}":
                out += b"{"
                i = j + 1
                continue
            name, delta = m.group(3), m.group(4)
            if name not in values:
                raise ValueError("unknown placeholder {%s}" % name)
            v = values[name]
            if delta:
                v = str(int(v) + int(delta))
            out += v.encode("utf-8") if isinstance(v, str) else v
            i = m.end() + 1


def key_variants(key):
    last = key[-1]
    first = key[0]
    return {
        "KEY": key,
        "KEY_LAST": key[:-1] + ("0" if last != "0" else "1"),
        "KEY_FIRST": ("t" if first != "t" else "u") + key[1:],
        "KEY_SWAPCASE": key.swapcase(),
        "KEY_SHORT": key[:-1],
        "KEY_LONG": key + "0",
        "KEY_BASIC": base64.b64encode(("user:" + key).encode()).decode(),
    }


def build_request(case, values):
    """The bytes to send for case."""
    lf = case.get("line-ends") == "lf"
    eol = "\n" if lf else "\r\n"
    body_t = case.body.replace("\n", "\r\n") if case.get("body-crlf") == "yes" else case.body
    body = expand(body_t, values)
    vals = dict(values, LEN=str(len(body)))
    head = list(case.head_lines)
    if case.get("raw") != "yes":
        names = {h.split(":", 1)[0].strip().lower() for h in head[1:] if ":" in h}
        if "host" not in names:
            head.append("Host: {HOST}")
        if "connection" not in names:
            head.append("Connection: close")
        method = head[0].split(" ", 1)[0]
        if (body or method in ("POST", "PUT", "PATCH")) and not names & {"content-length",
                                                                         "transfer-encoding"}:
            head.append("Content-Length: {LEN}")
    return expand(eol.join(head) + eol + eol, vals) + body


# ---------------------------------------------------------------------------
# One exchange on a raw socket

class Answer:
    def __init__(self, raw):
        self.raw = raw
        self.status = 0
        self.reason = ""
        self.headers = []
        self.body = b""
        self.parse()

    def parse(self):
        data = self.raw
        while data.startswith(b"HTTP/"):
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = data[:end].split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                return
            rest = data[end + 4:]
            if 100 <= status < 200 and status != 101:
                data = rest  # an interim answer (100 Continue)
                continue
            self.status = status
            self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            for line in lines[1:]:
                k, _, v = line.decode("latin-1").partition(":")
                self.headers.append((k.strip(), v.strip()))
            te = (self.header("transfer-encoding") or "").lower()
            cl = self.header("content-length")
            if "chunked" in te:
                self.body = _dechunk(rest)
            elif cl is not None and cl.isdigit():
                self.body = rest[:int(cl)]
            else:
                self.body = rest
            return

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def error(self):
        """The error object of an OpenAI-shaped error, or None."""
        try:
            j = json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        e = j.get("error") if isinstance(j, dict) else None
        return e if isinstance(e, dict) else None

    def describe(self, limit=600):
        text = self.raw[:limit].decode("utf-8", "replace")
        more = " ...(%d bytes)" % len(self.raw) if len(self.raw) > limit else ""
        return repr(text) + more


def _dechunk(data):
    out = b""
    while True:
        nl = data.find(b"\r\n")
        if nl < 0:
            return out + data
        try:
            n = int(data[:nl].split(b";")[0], 16)
        except ValueError:
            return out + data
        if n == 0:
            return out
        out += data[nl + 2:nl + 2 + n]
        data = data[nl + 2 + n + 2:]


def exchange(port, data, close_write=False, timeout=10.0):
    """Sends data, reads until the server closes (or timeout); the raw reply."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server may answer and close before reading it all
        if close_write:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    return out


# ---------------------------------------------------------------------------
# The test class: one test per case, on one shared gateway and mock

class Corpus(unittest.TestCase):
    gw = None
    mock = None
    control_state = None  # the endpoint's /v1/status entry after the control request
    pids = None

    @classmethod
    def setUpClass(cls):
        cls.mock = MockUpstream("corpus").start()
        cls.mock.set("status", status=400,
                     body={"error": {"message": "refused by the mock upstream",
                                     "type": "invalid_request_error", "code": MOCK_CODE}})
        config = {
            "server": {"apiKey": CLIENT_KEY, "maxBodyBytes": MAX_BODY,
                       "cooldown": {"failures": 1000, "seconds": 600}},
            "apis": [{"id": API_ID, "name": "corpus endpoint", "baseUrl": cls.mock.url,
                      "apiKey": UPSTREAM_KEY, "models": [SERVED],
                      "modelMapping": {MAPPED: SERVED}}],
        }
        cls.gw = th.gateway("corpus", config=config)
        cls.values = dict(key_variants(CLIENT_KEY), HOST="127.0.0.1:%d" % cls.gw.port,
                          PATH_PREFIX=cls.gw.mount.rstrip("/"), CLOSED_PORT=str(closed_port()))
        # Token totals to watch: one ordinary request that the mock answers
        # with usage. A reset that slips through shows as totals that fall.
        cls.mock.push("chat", usage=(11, 7))
        r = cls.gw.request("POST", "/v1/chat/completions", key=CLIENT_KEY,
                           body={"model": MAPPED, "messages": [{"role": "user", "content": "hi"}]})
        cls.control = r
        cls.control_state = cls.endpoint_state()
        cls.pids = cls.gw.responder_pids()
        cls.first_pids = list(cls.pids)

    @classmethod
    def tearDownClass(cls):
        if cls.mock is not None:
            cls.mock.stop()

    @classmethod
    def endpoint_state(cls):
        r = cls.gw.request("GET", "/v1/status", key=CLIENT_KEY, timeout=20)
        if r.status != 200:
            raise AssertionError("/v1/status: %s" % r.describe())
        for a in r.json().get("apis", []):
            if a.get("id") == API_ID:
                return a
        raise AssertionError("%s not in /v1/status: %s" % (API_ID, r.describe()))

    # -- the controls, first and last
    def test_0000_control_ordinary_request(self):
        r = self.control
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(self.mock.requests[0].json().get("model"), SERVED)
        self.assertEqual(self.control_state["tokens"]["total"], 18, self.control_state)
        self.assertTrue(self.pids, "no responder process found")

    def test_9999_control_still_serves_and_no_process_died(self):
        self.mock.push("chat", usage=(1, 1))
        n = self.mock.count()
        r = self.gw.request("POST", "/v1/chat/completions", key=CLIENT_KEY,
                            body={"model": MAPPED, "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(r.status, 200, r.describe())
        self.assertEqual(self.mock.count(), n + 1)
        self.assertEqual(self.gw.request("GET", "/health").status, 200)
        gone = set(self.first_pids) - set(self.gw.responder_pids())
        self.assertFalse(gone, "responder processes gone during the run: %s" % sorted(gone))
        log = self.gw.log_text()
        crash = re.findall(r".*(?:signal(?:l?ed)?:? (?:6|11)\b|SIGSEGV|SIGABRT|Segmentation|"
                           r"core dumped|died).*", log)
        self.assertFalse(crash, "crash marks in the logs:\n" + "\n".join(crash[:10]))

    # -- one corpus case
    def run_case(self, case):
        gw, mock = self.gw, self.mock
        data = build_request(case, self.values)
        before_pids = set(gw.responder_pids())
        before_n = mock.count()
        # Read here, not kept from the case before: the cases run in any order,
        # and the last control sends a request of its own.
        before = self.endpoint_state()
        timeout = float(case.get("timeout") or 10)
        raw = exchange(gw.port, data, close_write=case.get("send") == "close-write",
                       timeout=timeout)
        ans = Answer(raw)
        # Let a forwarded request land and a dying process go.
        time.sleep(0.02)
        after = self.endpoint_state()
        new_reqs = mock.requests[before_n:]
        sent = after["usage"]["rpd"] - before["usage"]["rpd"]
        after_pids = set(gw.responder_pids())
        what = "%s (%s)\n  sent: %r\n  got: %s" % (case.name, " ".join(case.description),
                                                 data[:300], ans.describe())

        # Who answered: the upstream (the mock's marks, or anything that
        # followed a counted attempt that is no gateway error), the responder
        # (an OpenAI error with one of its codes), or the web server.
        err = ans.error()
        code = err.get("code") if err is not None else None
        if not ans.status:
            source = "none"
        elif ans.header("x-mock-name") is not None or code == MOCK_CODE:
            source = "upstream"
        elif code in GATEWAY_CODES:
            source = "responder"
        elif sent > 0:
            source = "upstream"
        else:
            source = "web"
        OUTCOMES[case.name] = "%s %s%s attempts=%d" % (
            ans.status or "-", source, ":" + code if source == "responder" else "", sent)

        # 1. no responder process died
        gone = before_pids - after_pids
        self.assertFalse(gone, "responder processes gone: %s\n%s" % (sorted(gone), what))

        # 2. the answer
        if source == "none":
            self.assertEqual(case.get("no-answer"), "ok", "no answer\n" + what)
        elif source == "upstream":
            self.assertIn(case.forward, ("may", "must"),
                          "the upstream answered a case that must not be forwarded\n" + what)
            self.assertTrue(400 <= ans.status < 500, "upstream answer not 4xx\n" + what)
        elif source == "responder":
            ct = ans.header("content-type") or ""
            self.assertTrue(ct.startswith("application/json"), "Content-Type %r\n%s" % (ct, what))
            for k in ("message", "type", "code"):
                self.assertIsInstance(err.get(k), str, "error.%s\n%s" % (k, what))
            ok = any(st == ans.status and (c is None or c == code) for st, c in case.expects())
            self.assertTrue(ok, "responder answered %s %s; the case expects %s\n%s"
                            % (ans.status, code, case.get("expect") or "no responder answer",
                               what))
        elif any(st == ans.status and c is None for st, c in case.expects()):
            pass  # an expected answer without an error body (a 204 preflight)
        else:
            self.assertTrue(case.web_allows(ans.status),
                            "answered %d by the web server (no gateway error body); the case "
                            "allows %s\n%s" % (ans.status, case.get("web") or "none", what))
        if ans.status >= 500:
            self.assertTrue(case.web_allows(ans.status), "a 5xx\n" + what)
        self.assertFalse(th.leaked(raw.decode("latin-1"), UPSTREAM_KEY),
                         "the answer shows the upstream key\n" + what)
        self.assertIsNone(ans.header("x-injected"), "an X-Injected answer header\n" + what)

        # 3. forwarding
        if case.forward == "never":
            self.assertEqual(len(new_reqs), 0, "forwarded: %r\n%s" % (new_reqs, what))
            self.assertEqual(sent, 0, "an attempt was counted\n" + what)
        elif case.forward == "must":
            self.assertEqual(sent, 1, "not forwarded once (%d attempts)\n%s" % (sent, what))
            self.assertEqual(len(new_reqs), 1, "the mock saw %d requests\n%s"
                             % (len(new_reqs), what))
        else:
            self.assertIn(sent, (0, 1), "%d attempts\n%s" % (sent, what))
        self.assertLessEqual(len(new_reqs), sent, "the mock saw more than was counted\n" + what)
        for rec in new_reqs:
            self.check_forwarded(case, data, rec, what)

        # 4. no other state change
        self.assertEqual(after["tokens"], before["tokens"], "token totals changed\n" + what)
        self.assertLessEqual(after.get("errorCount"), before.get("errorCount"),
                             "a failure was charged to the endpoint\n" + what)
        self.assertFalse(after.get("temporarilyDisabled"), "endpoint cooling down\n" + what)

    def check_forwarded(self, case, data, rec, what):
        mock = self.mock
        what = "%s\n  upstream got: %s %s %r %r" % (what, rec.method, rec.path, rec.headers,
                                                    rec.body[:300])
        names = [k.lower() for k, _ in rec.headers]
        self.assertEqual(rec.header_all("Authorization"), ["Bearer " + UPSTREAM_KEY],
                         "upstream Authorization\n" + what)
        self.assertEqual(rec.header("Host"), "127.0.0.1:%d" % mock.port, "upstream Host\n" + what)
        for h in ALWAYS_ABSENT + tuple(case.list("upstream-absent")):
            self.assertNotIn(h.lower(), names, "%s reached upstream\n%s" % (h, what))
        for k, v in rec.headers:
            self.assertFalse(re.search(r"[\r\n\0]", k + v), "CR/LF/NUL in a header\n" + what)
            self.assertFalse(th.leaked(v, CLIENT_KEY), "the client key reached upstream\n" + what)
        self.assertFalse(th.leaked(rec.path, CLIENT_KEY), "client key in the path\n" + what)
        # The path exactly as the client sent it (the mount is "/").
        want_path = case.get("upstream-path")
        if want_path is None:
            want_path = data.split(b" ", 2)[1].decode("latin-1")
        if want_path != "any":
            self.assertEqual(rec.path, want_path, "upstream path\n" + what)
        upath = rec.path.split("?", 1)[0] + "/"
        for s in ("/../", "/%2e%2e/", "/%2E%2E/"):
            self.assertNotIn(s, upath, "a '..' segment reached upstream\n" + what)
        want_body = case.get("upstream-body")
        if want_body == "empty":
            self.assertEqual(rec.body, b"", "upstream body\n" + what)
        elif want_body == "same":
            sent_body = data[data.find(b"\r\n\r\n") + 4:] if b"\r\n\r\n" in data else b""
            self.assertEqual(rec.body, sent_body, "upstream body changed\n" + what)
        lacks = case.get("upstream-body-lacks")
        if lacks:
            self.assertNotIn(lacks.encode(), rec.body, "upstream body\n" + what)
        model = case.get("upstream-model")
        if model:
            try:
                # utf-8-sig: a leading byte order mark, which the gateway
                # passes on, is skipped as an upstream may skip it.
                pairs = json.loads(rec.body.decode("utf-8-sig"), object_pairs_hook=lambda p: p)
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                self.fail("upstream body is no JSON (%s)\n%s" % (e, what))
            models = [v for k, v in pairs if k == "model"]
            self.assertTrue(models and all(m == model for m in models),
                            "upstream models %r, want %r\n%s" % (models, model, what))


def _make_test(case):
    def test(self):
        self.run_case(case)
    test.__doc__ = " ".join(case.description)
    if case.get("known-bug"):
        test = unittest.expectedFailure(test)
    return test


def add_cases(cases):
    for n, case in enumerate(cases, 1):
        servers = case.list("servers")
        meth = _make_test(case)
        if servers and SERVER not in servers:
            meth = unittest.skip("runs behind %s only" % "/".join(servers))(meth)
        method = "test_%04d_%s" % (n, case.name.replace("-", "_"))
        METHOD_CASE[method] = case.name
        setattr(Corpus, method, meth)


class CorpusTap(th.TapResult):
    """TAP as test_http.py prints it, plus, with -v, each case's outcome
    (status, who answered, attempts counted) and why a known bug failed."""

    def _outcome(self, test):
        name = METHOD_CASE.get(test.id().rsplit(".", 1)[-1])
        if self.verbose and name in OUTCOMES:
            print("# outcome: %s" % OUTCOMES[name])

    def addSuccess(self, test):
        super().addSuccess(test)
        self._outcome(test)

    def addExpectedFailure(self, test, err):
        # TAP: "not ok ... # TODO" is an expected failure (XFAIL); the
        # "ok ... # TODO" of th.TapResult would count as an unexpected pass.
        unittest.TestResult.addExpectedFailure(self, test, err)
        first = (str(err[1]).strip().splitlines() or [err[0].__name__])[0]
        first = first.replace("False is not true : ", "").replace("#", "")
        self._line(test, False, " # TODO known bug: %s" % first)
        self._outcome(test)

    def addUnexpectedSuccess(self, test):
        # "ok ... # TODO" (XPASS): the known bug is gone; drop its
        # "known-bug" line from the case.
        unittest.TestResult.addUnexpectedSuccess(self, test)
        self._line(test, True, " # TODO known bug fixed? drop known-bug from the case")
        self._outcome(test)


def main(argv):
    argv = list(argv)
    seed = harness.shuffle_seed(argv)
    verbose = "-v" in argv
    names = [a for a in argv if not a.startswith("-")]
    if SERVER not in harness.SERVER_KINDS:
        print("Bail out! API_TOGETHER_TEST_SERVER=%s: not one of %s"
              % (SERVER, ", ".join(harness.SERVER_KINDS)))
        return 1
    missing = harness.server_missing(SERVER)
    if missing:
        print("1..0 # SKIP %s" % missing)
        return 0
    if not os.access(harness.BIN, os.X_OK):
        print("Bail out! responder not built: %s" % harness.BIN)
        return 1
    try:
        cases = load_corpus()
    except ValueError as e:
        print("Bail out! %s" % e)
        return 1
    if not cases:
        print("Bail out! no cases in %s" % CORPUS)
        return 1
    if names:
        cases = [c for c in cases if c.name in names]
    add_cases(cases)
    loader = unittest.TestLoader()
    suite = harness.shuffled(loader.loadTestsFromTestCase(Corpus), seed)
    result = CorpusTap(verbose)
    print("# server: %s; %d cases from %s" % (SERVER, len(cases), CORPUS))
    if seed is not None:
        print("# shuffled: seed %s" % seed)
    t0 = time.monotonic()
    try:
        suite.run(result)
    finally:
        th.stop_gateways()
    print("1..%d" % result.n)
    print("# %s: %d run, %d failed, %d skipped, %d known bugs in %.1fs" % (
        SERVER, result.n, result.bad, len(result.skipped), len(result.expectedFailures),
        time.monotonic() - t0))
    sys.stdout.flush()
    return 0 if result.bad == 0 and result.n > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
