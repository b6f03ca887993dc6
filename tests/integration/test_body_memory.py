#!/usr/bin/env python3
"""Memory per request (issue 16 point 1; doc/behaviour.md, Forwarding): the
body is checked without building a tree, so whatever its shape, one
responder's peak RSS grows by at most twice the body plus 2 MiB while it
serves it, and comes back to within 2 MiB of what it was idle after the
answer. A jansson tree of a 10 MiB body of empty objects took 800 MB.

Behind lighttpd with ONE responder process (max-procs 1, one worker thread),
so that its /proc/PID/status is the one that served: before each request its
VmHWM is reset to its current RSS (writing 5 to /proc/PID/clear_refs), then
the request is sent, then a GET /health (which the one worker thread serves
only after it freed what the first took), then VmHWM (the peak while
serving) and VmRSS (after) are read. Each worst shape at the size limit (server.maxBodyBytes, 10 MiB):
many empty objects, many empty arrays, many numbers, many short strings,
many keys, nesting at the depth limit padded with a long string, nesting far
past it (refused), one long string; each routed on a mapped model, so the
copy with the model rewritten is made too.

    B01 every worst shape within 2 x body + 2 MiB, and back within 2 MiB
    B02 the threads a burst started, and their upstream connections, go
        after it (a thread that waited 5 s in accept for nothing ends)
    B03 requests held by the state file, not by their upstreams, start no
        thread: the waiting connections are left to the threads running

Prints TAP (the runner of test_http.py). By hand:

    python3 tests/integration/test_body_memory.py [-v]
"""

import fcntl
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402  (shared Base, TAP printer, keys)
from mock_upstream import MockUpstream  # noqa: E402

# The mock upstream (a thread of this process) parses what it gets: the
# nesting at the depth limit too.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

MIB = 1024 * 1024
LIMIT = 10 * MIB
SLACK = 2 * MIB
CHAT = "/v1/chat/completions"
SERVED, MAPPED = "m-up", "m"


def status_field(pid, field):
    """The number of a "Field:  N" line of /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("%s not in /proc/%d/status" % (field, pid))


def status_kb(pid, field):
    """A "VmXXX:  N kB" line of /proc/PID/status, in bytes."""
    return status_field(pid, field) * 1024


def fill(head, unit, tail, size):
    """head + unit repeated + tail, as close to size bytes as whole units go."""
    n = (size - len(head) - len(tail)) // len(unit)
    return head + unit * n + tail


def shapes():
    """(name, body, expected status) at the size limit. The model is mapped,
    so a forwarded body is copied once more with its model rewritten."""
    head = b'{"model":"m","a":['
    pad_head = b'{"model":"m","deep":'
    depth = 2047  # the deepest a value may be (jansson's 2048, scalars counted)
    deep = b"[" * (depth - 1) + b"]" * (depth - 1)
    return [
        ("empty objects", fill(head, b"{},", b"{}]}", LIMIT), 400),
        ("empty arrays", fill(head, b"[],", b"[]]}", LIMIT), 400),
        ("numbers", fill(head, b"1,", b"1]}", LIMIT), 400),
        ("short strings", fill(head, b'"",', b'""]}', LIMIT), 400),
        ("keys", fill(b'{"model":"m"', b',"":0', b"}", LIMIT), 400),
        ("nesting at the limit",
         fill(pad_head + deep + b',"pad":"', b"x", b'"}', LIMIT), 400),
        ("nesting past the limit", b'{"model":"m","a":' + b"[" * ((LIMIT - 20) // 2)
         + b"]" * ((LIMIT - 20) // 2) + b"}", 400),
        ("one long string", fill(b'{"model":"m","a":"', b"x", b'"}', LIMIT), 400),
    ]


class B01WorstShapes(th.Base):
    mock = None

    @classmethod
    def setUpClass(cls):
        cls.mock = MockUpstream("memory").start()
        # The mock refuses every request, without reading the body as JSON.
        cls.mock.set("status", status=400,
                     body={"error": {"message": "refused", "type": "invalid_request_error",
                                     "code": "mock_refused"}})
        config = {
            "server": {"apiKey": th.CLIENT_KEY, "maxBodyBytes": LIMIT},
            "apis": [{"id": "memory-ep", "name": "memory", "baseUrl": cls.mock.url,
                      "apiKey": th.new_key("sk-up-mem-"), "models": [SERVED],
                      "modelMapping": {MAPPED: SERVED}}],
        }
        cls.gw = th.gateway("memory", config=config, max_procs=1,
                            extra_env={"API_TOGETHER_THREADS": "1"})

    @classmethod
    def tearDownClass(cls):
        if cls.mock is not None:
            cls.mock.stop()

    def setUp(self):
        super().setUp()

    def the_responder(self):
        pids = self.gw.responder_pids()
        self.assertEqual(len(pids), 1, "one responder process expected: %r" % pids)
        return pids[0]

    def small_request(self):
        r = self.gw.request("POST", CHAT, key=th.CLIENT_KEY,
                            body={"model": MAPPED, "messages": []})
        self.assertEqual(r.status, 400, r.describe())

    def test_worst_shapes_stay_within_twice_the_body(self):
        if harness.DEFAULT_SERVER != "lighttpd":
            self.skipTest("reads one lighttpd responder's /proc")
        # ASan's allocator holds freed blocks in its quarantine (256 MiB) and
        # keeps its shadow memory: RSS there says nothing of our buffers.
        if os.environ.get("API_TOGETHER_SANITIZED"):
            self.skipTest("the memory of an ASan build is ASan's allocator's")
        # Warm up: the process has its threads, handles and buffers.
        for _ in range(3):
            self.small_request()
        pid = self.the_responder()
        for name, body, want in shapes():
            self.assertLessEqual(len(body), LIMIT, name)
            self.assertGreater(len(body), LIMIT - 64, name)
            with self.subTest(shape=name):
                idle = status_kb(pid, "VmRSS")
                with open("/proc/%d/clear_refs" % pid, "w") as f:
                    f.write("5")  # VmHWM := VmRSS
                r = self.gw.request("POST", CHAT, key=th.CLIENT_KEY, body=body, timeout=120)
                self.assertEqual(r.status, want, "%s: %s" % (name, r.describe(300)))
                # The one worker thread serves the next request only once it
                # has freed what the last one took: after it, RSS is settled.
                self.assertEqual(self.gw.request("GET", "/health").status, 200)
                peak = status_kb(pid, "VmHWM")
                after = status_kb(pid, "VmRSS")
                self.assertEqual(self.the_responder(), pid, "the responder was restarted")
                what = ("%s (%d bytes): idle %.1f MiB, peak %.1f MiB, after %.1f MiB"
                        % (name, len(body), idle / MIB, peak / MIB, after / MIB))
                print("# " + what)
                self.assertLessEqual(peak - idle, 2 * len(body) + SLACK, what)
                self.assertLessEqual(after - idle, SLACK, what)


def worker_threads(pid):
    """The threads of pid but its main one."""
    return status_field(pid, "Threads") - 1


def connections_to(pid, port):
    """pid's established TCP connections to 127.0.0.1:port."""
    inodes = set()
    with open("/proc/%d/net/tcp" % pid) as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 10 and cols[3] == "01" and \
                    int(cols[2].rsplit(":", 1)[1], 16) == port:
                inodes.add("socket:[%s]" % cols[9])
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes
        except OSError:
            pass
    return n


class OneResponder(th.Base):
    """A gateway of its own, NAME, with one responder process (max-procs 1)
    and one endpoint on a mock serving model "m"; gateway_kw go to the
    gateway too."""

    NAME = None
    gateway_kw = {}
    mock = None

    @classmethod
    def setUpClass(cls):
        cls.mock = MockUpstream(cls.NAME).start()
        config = {
            "server": {"apiKey": th.CLIENT_KEY},
            "apis": [{"id": cls.NAME + "-ep", "name": cls.NAME, "baseUrl": cls.mock.url,
                      "apiKey": th.new_key("sk-up-%s-" % cls.NAME), "models": ["m"]}],
        }
        cls.gw = th.gateway(cls.NAME, config=config, max_procs=1, **cls.gateway_kw)

    @classmethod
    def tearDownClass(cls):
        if cls.mock is not None:
            cls.mock.stop()

    def responder_pid(self):
        """The one responder's pid; the test is skipped under another server."""
        if harness.DEFAULT_SERVER != "lighttpd":
            self.skipTest("reads one lighttpd responder's /proc")
        pids = self.gw.responder_pids()
        self.assertEqual(len(pids), 1, "one responder process expected: %r" % pids)
        return pids[0]


class B02BurstThreadsEnd(OneResponder):
    """The worker threads a burst started end once it is over, down to the
    4 a process starts with, each taking one of the libcurl handles the
    process keeps (and so its upstream connection) along (doc/behaviour.md,
    Processes, threads, timeouts: memory after a burst). One responder:
    BURST requests held HOLD s at the mock all reach it together, so the
    process runs at least BURST threads; a thread that waited 5 s in accept
    for nothing ends while another waits there."""

    NAME = "burst"
    BURST, HOLD = 12, 3.0

    def test_threads_and_connections_of_a_burst_go_after_it(self):
        pid = self.responder_pid()
        self.mock.clear()
        self.mock.set("chat", delay=self.HOLD)
        results = []

        def one():
            r = self.gw.request("POST", CHAT, key=th.CLIENT_KEY,
                                body={"model": "m", "messages": []}, timeout=60)
            results.append(r.status)
        clients = [threading.Thread(target=one) for _ in range(self.BURST)]
        for c in clients:
            c.start()
        # Every request at the mock at once: each is served by a thread.
        self.assertTrue(self.wait_for(lambda: self.mock.count() >= self.BURST, timeout=30),
                        "all %d requests at the mock" % self.BURST)
        during = worker_threads(pid)
        for c in clients:
            c.join(60)
        self.assertEqual(results, [200] * self.BURST)
        self.assertGreaterEqual(during, self.BURST)
        self.assertGreaterEqual(connections_to(pid, self.mock.port), self.BURST)
        self.assertTrue(self.wait_for(lambda: worker_threads(pid) <= 4, timeout=60, step=0.5),
                        "the burst's threads gone: %d during it, %d now"
                        % (during, worker_threads(pid)))
        self.assertLessEqual(connections_to(pid, self.mock.port), 4)
        self.assertEqual(self.gw.responder_pids(), [pid], "the responder was restarted")
        # And they come back when needed.
        self.mock.set("chat")
        r = self.gw.request("POST", CHAT, key=th.CLIENT_KEY, body={"model": "m", "messages": []})
        self.assertEqual(r.status, 200, r.describe())


class B03NoThreadsForTheProcessors(OneResponder):
    """A connection that waits while every thread is busy starts another
    thread only when the others wait on their upstreams (doc/behaviour.md,
    Processes, threads, timeouts): threads held by the state file, as by
    the processors, end their requests without help, and more of them would
    only share what holds them up. One responder, its state file locked
    from here while BURST requests arrive together: its 4 threads wait for
    the lock, the rest of the requests wait in the listen queue, and no
    thread starts; the lock released, all are served."""

    NAME = "queue"
    gateway_kw = {"store": "gdbm"}
    BURST = 10

    def test_threads_waiting_on_the_state_file_start_none(self):
        pid = self.responder_pid()
        # Served once: the store is open and the 4 first threads run.
        r = self.gw.request("POST", CHAT, key=th.CLIENT_KEY, body={"model": "m", "messages": []})
        self.assertEqual(r.status, 200, r.describe())
        self.assertTrue(self.wait_for(lambda: worker_threads(pid) <= 4, timeout=30, step=0.2))
        self.mock.clear()
        body = json.dumps({"model": "m", "messages": []}).encode()
        head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n" % (CHAT, th.CLIENT_KEY, len(body))).encode()
        socks = [socket.create_connection(("127.0.0.1", self.gw.port), timeout=60)
                 for _ in range(self.BURST)]
        most = 0
        try:
            with open(self.gw.state_path + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                # All but the last byte first, then the last bytes together:
                # lighttpd reads them in one turn and connects to the
                # responder BURST times at once, so connections wait in its
                # listen queue as its threads take the first ones.
                for s in socks:
                    s.sendall(head + body[:-1])
                time.sleep(0.2)
                for s in socks:
                    s.sendall(body[-1:])
                # Well within the responder's 3 s wait for the lock.
                end = time.monotonic() + 1.5
                while time.monotonic() < end:
                    most = max(most, worker_threads(pid))
                    time.sleep(0.02)
                self.assertEqual(self.mock.count(), 0, "a request passed the locked state file")
                fcntl.flock(lock, fcntl.LOCK_UN)
            answers = [harness.recv_to_end(s).split(b"\r\n", 1)[0].decode("latin-1")
                       for s in socks]
        finally:
            for s in socks:
                s.close()
        self.assertEqual(answers, ["HTTP/1.1 200 OK"] * self.BURST)
        self.assertEqual(self.mock.count(), self.BURST)
        self.assertLessEqual(most, 4, "threads started for requests held by the state file")
        self.assertEqual(self.gw.responder_pids(), [pid], "the responder was restarted")


class B04AnsweredRequestFreesItsThread(OneResponder):
    """A request read whole and answered on a Unix socket frees its thread
    at once: the responder closes the connection without waiting for the
    web server to close its side (doc/behaviour.md, Web servers: libfcgi). One responder with one thread, spoken to on its socket as
    lighttpd does: connection A gets its whole answer and stays open, as a
    web server busy with other clients keeps it a while; B's request is
    then answered at once. libfcgi's close shut its side and read from A
    until A closed or 2 s passed, holding the one thread."""

    NAME = "close"
    gateway_kw = {"extra_env": {"API_TOGETHER_THREADS": "1"}}
    DRAIN_S = 2.0  # libfcgi's wait for the web server's close

    def test_thread_serves_the_next_request_while_the_server_keeps_the_last(self):
        pid = self.responder_pid()
        sock = self.gw.process_sockets()[pid]
        path = self.gw.url_path(CHAT)
        body = {"model": "m", "messages": []}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as a:
            a.connect(sock)
            a.settimeout(30)
            a.sendall(harness.fastcgi_encode("POST", path, body, key=th.CLIENT_KEY))
            first = harness.fastcgi_answer(a.makefile("rb"), "POST", path, time.monotonic())
            self.assertEqual(first.status, 200, first.describe())
            # A stays open; the one thread takes B.
            r = harness.fastcgi_request(sock, "POST", path, body=body, key=th.CLIENT_KEY)
            self.assertEqual(r.status, 200, r.describe())
            self.assertLess(r.elapsed, self.DRAIN_S / 2,
                            "B waited %.2f s: the thread was still on A" % r.elapsed)
            # And A was closed by the responder: nothing more, then the end.
            self.assertEqual(a.recv(1), b"")
        self.assertEqual(self.mock.count(), 2)

    def test_a_request_without_a_body_frees_its_thread_too(self):
        # GET /health never reads its input: the responder reads its end
        # with the parameters, or libfcgi's close waits on A as above.
        pid = self.responder_pid()
        sock = self.gw.process_sockets()[pid]
        health = self.gw.url_path("/health")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as a:
            a.connect(sock)
            a.settimeout(30)
            a.sendall(harness.fastcgi_encode("GET", health))
            first = harness.fastcgi_answer(a.makefile("rb"), "GET", health, time.monotonic())
            self.assertEqual(first.status, 200, first.describe())
            r = harness.fastcgi_request(sock, "GET", health)
            self.assertEqual(r.status, 200, r.describe())
            self.assertLess(r.elapsed, self.DRAIN_S / 2,
                            "B waited %.2f s: the thread was still on A" % r.elapsed)
            self.assertEqual(a.recv(1), b"")


ORDER = [B01WorstShapes, B02BurstThreadsEnd, B03NoThreadsForTheProcessors,
         B04AnsweredRequestFreesItsThread]


def main(argv):
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
