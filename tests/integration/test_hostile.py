#!/usr/bin/env python3
"""Inputs that must not hurt an endpoint or leak a key, through a real web
server (lighttpd by default; API_TOGETHER_TEST_SERVER as in test_http.py):

- a request the gateway cannot forward is the gateway's fault: 400 or 500,
  and no endpoint is charged a failure (three such requests must not put every
  endpoint into cooldown);
- an upstream that quotes its key back (in a 401's body or header, or in a 400
  that goes to the client as it is) never hands that key to the client;
- an encoded "/v1" cannot route around a baseUrl's path;
- a stream that sends no data event counts as empty and goes to the next
  endpoint;
- `api-together --status` creates no file;
- a config every user can read (it holds keys) is warned about;
- an upstream's local Location (after any whitespace) and header names that
  are no tokens never reach the web server;
- FastCGI connections that send nothing never keep a `--listen` responder
  from serving.
"""

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_http as th  # noqa: E402
from test_http import CLIENT_KEY, chat  # noqa: E402


def raw_request(gw, line, headers=(), body=b""):
    """Sends a request line as given (http.client refuses what this sends)."""
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    try:
        head = [line, "Host: 127.0.0.1", "Connection: close",
                "Content-Length: %d" % len(body)] + list(headers)
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        data = harness.recv_to_end(s)
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


class H01GatewayFaultsChargeNoEndpoint(th.Base):
    def test_unforwardable_query_is_400_and_no_endpoint_cools_down(self):
        a = self.mock("a")
        ida = self.uid("a")
        self.configure([self.api(ida, a.url, ["m-h01"])], cooldown={"failures": 2, "seconds": 600})
        for _ in range(3):
            st, data = raw_request(
                self.gw, "POST %s HTTP/1.1" % self.gw.url_path("/v1/chat/completions?a b"),
                ["Authorization: Bearer " + CLIENT_KEY, "Content-Type: application/json"],
                b'{"model":"m-h01"}')
            # lighttpd may refuse the line itself; either way never a 5xx.
            self.assertIn(st, (400, 404), data[:300])
        self.assertEqual(a.count(), 0)
        s = self.status_of(ida)
        self.assertEqual(s["errorCount"], 0, s)
        self.assertFalse(s["temporarilyDisabled"], s)
        r = self.post("/v1/chat/completions", chat("m-h01"))
        self.assertStatus(r, 200)

    def test_encoded_v1_is_refused_not_sent_outside_the_base_path(self):
        a = self.mock("a")
        ida = self.uid("a")
        self.configure([self.api(ida, a.url + "/api/v1", ["m-h01b"])])
        # Not a mount point (404) or a refused path (400): never forwarded.
        for path in ("/%76%31/chat/completions", "/v1%2Fchat/completions"):
            r = self.post(path, chat("m-h01b"))
            self.assertIn(r.status, (400, 404), r.describe())
        self.assertEqual(a.count(), 0)


class H02KeysNeverReachTheClient(th.Base):
    def test_key_quoted_in_a_401_body_and_header_is_masked(self):
        a = self.mock("a")
        ida = self.uid("a")
        api = self.api(ida, a.url, ["m-h02"])
        key = api["apiKey"]
        a.set("status", status=401, body={"error": {"message": "Incorrect API key: " + key}},
              headers={"WWW-Authenticate": 'Bearer realm="x", key="%s"' % key})
        self.configure([api])
        r = self.post("/v1/chat/completions", chat("m-h02"))
        self.assertStatus(r, 401)
        whole = r.text() + "".join("%s: %s\n" % h for h in r.headers)
        self.assertFalse(th.leaked(whole, key), whole)
        self.assertIn(key[-4:], r.text())

    def test_key_quoted_in_a_400_passed_through_is_masked(self):
        a = self.mock("a")
        ida = self.uid("a")
        api = self.api(ida, a.url, ["m-h02b"], headers={"api-key": "azure-secret-0123456789"})
        a.set("status", status=400,
              body="bad request for key %s and azure-secret-0123456789" % api["apiKey"])
        self.configure([api])
        r = self.post("/v1/chat/completions", chat("m-h02b"))
        self.assertStatus(r, 400)
        self.assertFalse(th.leaked(r.text(), api["apiKey"]), r.text())
        self.assertFalse(th.leaked(r.text(), "azure-secret-0123456789"), r.text())
        self.assertEqual(a.count(), 1)


class H03EmptyStreams(th.Base):
    def test_stream_with_only_comments_goes_to_the_next_endpoint(self):
        a, b = self.mock("a"), self.mock("b", "stream", events=2, interval_ms=10)
        ida, idb = self.uid("a"), self.uid("b")
        a.set("status", status=200, body=": keep-alive\n\n: still here\n\n",
              headers={"Content-Type": "text/event-stream"})
        self.configure([self.api(ida, a.url, ["m-h03"], weight=th.FIRST),
                        self.api(idb, b.url, ["m-h03"], weight=th.LAST)])
        r = self.post("/v1/chat/completions", chat("m-h03", stream=True))
        self.assertStatus(r, 200)
        self.assertIn("[DONE]", r.text())
        self.assertNotIn("keep-alive", r.text())
        self.assertEqual((a.count(), b.count()), (1, 1))
        self.assertEqual(self.status_of(ida)["errorCount"], 1)


class H04ConfigMode(th.Base):
    def test_world_readable_config_is_warned_about(self):
        a = self.mock("a")
        os.chmod(self.gw.config_path, 0o644)
        self.configure([self.api(self.uid("a"), a.url, ["m-h04"])])
        os.chmod(self.gw.config_path, 0o644)
        self.assertStatus(self.post("/v1/chat/completions", chat("m-h04")), 200)
        self.assertIn("readable by every user", self.gw.log_since(self.log_offset))
        p = subprocess.run([harness.BIN, "--check-config", self.gw.config_path],
                           capture_output=True, text=True, timeout=20)
        self.assertIn("readable by every user", p.stdout)


class H05StatusCommand(th.Base):
    def test_status_command_creates_no_state_file(self):
        d = self.gw.path("no-state-here")
        os.mkdir(d)
        env = dict(os.environ, API_TOGETHER_CONFIG=self.gw.config_path,
                   API_TOGETHER_STATE=os.path.join(d, "state.db"))
        p = subprocess.run([harness.BIN, "--status"], env=env, capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(os.listdir(d), [])


class H06AnswerHeaders(th.Base):
    def test_local_location_after_any_whitespace_and_names_not_tokens_are_dropped(self):
        # A vertical tab or form feed before "/" still makes a local
        # Location (Apache's CGI parser skips any whitespace); a header name
        # that is no token is no header (doc/behaviour.md, Forwarding).
        a = self.mock("a")
        body = (b'{"id":"x","object":"chat.completion","choices":[{"index":0,'
                b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
                b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
        head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json",
                b"Location:\x0b/v1/status", b"Location:\x0c/health",
                b"X\x0bEvil: 1", b"X-Also Evil: 1", b"X-Fine: yes",
                b"Content-Length: %d" % len(body), b"Connection: close"]
        a.set("garbage", data=b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.configure([self.api(self.uid("a"), a.url, ["m-h06"])])
        r = self.post("/v1/chat/completions", chat("m-h06"))
        self.assertStatus(r, 200)
        names = [n.lower() for n, _ in r.headers]
        self.assertIn("x-fine", names, r.headers)
        self.assertNotIn("location", names, r.headers)
        self.assertFalse([n for n in names if "evil" in n], r.headers)
        self.assertIn('"hi"', r.text())


# How long the responder waits for a FastCGI connection's first bytes and
# for each read of its parameters (doc/behaviour.md, Web servers: libfcgi).
FCGI_SILENCE_S = 5.0


def fcgi_record(rtype, content, req_id=1):
    return struct.pack("!BBHHBx", 1, rtype, req_id, len(content), 0) + content


def fcgi_params(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def fcgi_connect(addr, timeout):
    """A connection to a FastCGI socket: (host, port), or a Unix socket's path."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    return socket.create_connection(addr, timeout=timeout)


def fcgi_get(addr, uri, timeout):
    """One FastCGI GET of uri (a web server's part); returns (status, seconds)."""
    t0 = time.monotonic()
    s = fcgi_connect(addr, timeout)
    try:
        s.sendall(fcgi_record(1, struct.pack("!HB5x", 1, 0))
                  + fcgi_record(4, fcgi_params({"REQUEST_METHOD": "GET", "REQUEST_URI": uri,
                                                "SERVER_PROTOCOL": "HTTP/1.1"}))
                  + fcgi_record(4, b"") + fcgi_record(5, b""))
        data, out = b"", b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            while len(data) >= 8:
                _, rtype, _, clen, plen = struct.unpack("!BBHHBx", data[:8])
                if len(data) < 8 + clen + plen:
                    break
                if rtype == 6:
                    out += data[8:8 + clen]
                data = data[8 + clen + plen:]
                if rtype == 3:
                    m = re.search(rb"^Status: (\d+)", out, re.M)
                    return (int(m.group(1)) if m else 200), time.monotonic() - t0
        return 0, time.monotonic() - t0
    finally:
        s.close()


class H07IdleFastCGIConnections(th.Base):
    """Connections to a `--listen` responder that send nothing, or stop after
    a byte, are dropped after FCGI_SILENCE_S and never keep it from serving:
    a thread waiting on one is not counted idle, so a spare one starts when
    it can (doc/behaviour.md, Web servers: libfcgi)."""

    def listener(self, threads, unix=False):
        d = tempfile.mkdtemp(prefix="api-together-idle-")
        self.addCleanup(shutil.rmtree, d, True)
        addr = os.path.join(d, "fcgi.sock") if unix else ("127.0.0.1", harness.free_port())
        env = dict(os.environ, API_TOGETHER_CONFIG=self.gw.config_path,
                   API_TOGETHER_STATE=os.path.join(d, "state.db"),
                   API_TOGETHER_THREADS=str(threads))
        log = open(os.path.join(d, "responder.log"), "ab")
        p = subprocess.Popen([harness.BIN, "--listen", addr if unix else "%s:%d" % addr],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        self.addCleanup(p.wait, 10)
        self.addCleanup(p.kill)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.assertEqual(fcgi_get(addr, "/health", 10)[0], 200)
                return addr
            except OSError:
                self.assertLess(time.monotonic(), deadline, "--listen never took connections")
                time.sleep(0.05)

    def idle(self, addr, n, first_byte=False):
        conns = []
        for _ in range(n):
            c = fcgi_connect(addr, 30)
            if first_byte:
                c.sendall(b"\x01")  # a record's first byte, then silence
            self.addCleanup(c.close)
            conns.append(c)
        time.sleep(0.3)  # each taken by a thread (they wait on it)
        return conns

    def test_every_thread_on_a_silent_connection_serves_again_after_the_drop(self):
        a = self.mock("a")
        self.configure([self.api(self.uid("a"), a.url, ["m-h07"])])
        addr = self.listener(threads=4)  # no spare thread can start
        conns = self.idle(addr, 2) + self.idle(addr, 2, first_byte=True)
        status, took = fcgi_get(addr, "/health", FCGI_SILENCE_S + 10)
        self.assertEqual(status, 200)
        self.assertLess(took, FCGI_SILENCE_S + 2.0, "served %.1fs late" % took)
        # The silent ones were dropped: the responder closed them.
        for c in conns:
            c.settimeout(FCGI_SILENCE_S + 5)
            try:
                self.assertEqual(c.recv(1), b"")
            except ConnectionResetError:
                pass

    def test_silent_connections_on_a_unix_socket_are_dropped_too(self):
        a = self.mock("a")
        self.configure([self.api(self.uid("a"), a.url, ["m-h07u"])])
        addr = self.listener(threads=4, unix=True)
        self.idle(addr, 4)
        status, took = fcgi_get(addr, "/health", FCGI_SILENCE_S + 10)
        self.assertEqual(status, 200)
        self.assertLess(took, FCGI_SILENCE_S + 2.0, "served %.1fs late" % took)

    def test_silent_connections_do_not_hold_up_a_request_when_a_thread_can_start(self):
        a = self.mock("a")
        self.configure([self.api(self.uid("a"), a.url, ["m-h07b"])])
        addr = self.listener(threads=16)  # 4 start first
        self.idle(addr, 4)
        status, took = fcgi_get(addr, "/health", FCGI_SILENCE_S + 10)
        self.assertEqual(status, 200)
        self.assertLess(took, FCGI_SILENCE_S / 2, "a silent connection held it up %.1fs" % took)


ORDER = [H01GatewayFaultsChargeNoEndpoint, H02KeysNeverReachTheClient, H03EmptyStreams,
         H04ConfigMode, H05StatusCommand, H06AnswerHeaders,
         H07IdleFastCGIConnections]


def main(argv):
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
