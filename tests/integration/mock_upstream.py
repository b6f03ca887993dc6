#!/usr/bin/env python3
"""A mock OpenAI-compatible upstream for the integration tests.

Python 3 standard library only. As a library:

    mock = MockUpstream("a").start()      # 127.0.0.1, ephemeral port
    mock.set("chat", usage=(11, 7))       # default answer for every request
    mock.push("status", status=500)       # one-shot answer, used first (FIFO)
    ... mock.url, mock.port, mock.requests, mock.streams ...
    mock.stop()

From the command line (for poking at the responder by hand):

    python3 mock_upstream.py --mode stream --events 5 --interval-ms 300

Behaviours (the first argument of set/push):

    chat             200 chat.completion JSON with usage (usage=(prompt, completion))
    embeddings       200 embeddings list JSON (usage without completion_tokens)
    status           status=N, body=str|bytes|dict, headers={...}
    empty            200 with an empty body (Content-Length: 0)
    zero_completion  200 chat.completion whose usage has completion_tokens 0
    stream           events=N content chunks interval_ms=D apart, then a chunk
                     with usage, then "data: [DONE]"; chunked encoding, one HTTP
                     chunk per event, each written at once
    close            read the request, then close the connection without answering
    auto             "stream" when the request's JSON body has "stream": true, else
                     "chat"; usage=(p, c) for chat, stream_usage=(p, c) for streams

Every behaviour takes delay=SECONDS (sleep before answering). A port that
refuses connections: closed_port().

Every request is recorded (method, path with query, headers, raw body, time);
every streamed answer is recorded in streams (time of each event written, and
when a write failed because the other side had gone).
"""

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["MockUpstream", "Recorded", "closed_port"]


def closed_port():
    """A 127.0.0.1 port nobody listens on (connections are refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Recorded:
    """One request as the mock received it."""

    def __init__(self, method, path, headers, body, t, index):
        self.method = method
        self.path = path  # with the query string, exactly as sent
        self.headers = headers  # list of (name, value), in order
        self.body = body  # raw bytes
        self.time = t  # time.monotonic() when the request was complete
        self.index = index
        self.answer = None  # bytes of the body the mock answered with

    def header(self, name):
        """The first value of header name (any case), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%s %s %d bytes hdrs=%r>" % (self.method, self.path, len(self.body), self.headers)


def _body_bytes(body):
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-upstream/1"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # quiet; the mock records instead
        if self.server.mock.verbose:
            sys.stderr.write("mock %s: %s\n" % (self.server.mock.name, fmt % args))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers up to the empty line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after the chunk
            return bytes(out)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self):
        mock = self.server.mock
        body = self._read_body()
        rec = mock._record(self.command, self.path, list(self.headers.items()), body)
        beh = mock._next_behaviour()
        kind = beh.get("kind", "chat")
        delay = float(beh.get("delay", 0) or 0)
        if delay > 0:
            time.sleep(delay)
        model = None
        try:
            j = json.loads(body.decode("utf-8")) if body else None
            if isinstance(j, dict) and isinstance(j.get("model"), str):
                model = j["model"]
        except (ValueError, UnicodeDecodeError):
            pass
        model = model or "mock-model"
        if kind == "auto":
            wants_stream = False
            try:
                j = json.loads(body.decode("utf-8")) if body else None
                wants_stream = isinstance(j, dict) and j.get("stream") is True
            except (ValueError, UnicodeDecodeError):
                pass
            if wants_stream:
                beh = dict(beh, kind="stream", usage=beh.get("stream_usage", (5, 3)))
            else:
                beh = dict(beh, kind="chat")
            kind = beh["kind"]
        try:
            if kind == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if kind == "stream":
                self._stream(beh, rec, model)
                return
            status, headers, payload = mock._answer(beh, model, rec)
            rec.answer = payload
            self.send_response(status)
            hdr_names = {k.lower() for k in headers}
            if "content-type" not in hdr_names:
                self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Mock-Name", mock.name)
            self.end_headers()
            if payload:
                self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _stream(self, beh, rec, model):
        mock = self.server.mock
        n = int(beh.get("events", 5))
        interval = float(beh.get("interval_ms", 100)) / 1000.0
        pt, ct = beh.get("usage", (5, 3))
        info = {"request_index": rec.index, "sent_times": [], "aborted_at": None,
                "completed": False, "error": None, "started_at": time.monotonic()}
        with mock._lock:
            mock.streams.append(info)
        self.send_response(int(beh.get("status", 200)))
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Mock-Name", mock.name)
        self.end_headers()
        created = int(time.time())
        events = []
        for i in range(n):
            events.append({"id": "chatcmpl-mock-%d" % rec.index, "object": "chat.completion.chunk",
                           "created": created, "model": model,
                           "choices": [{"index": 0, "delta": {"content": "tok%d " % i},
                                        "finish_reason": None}]})
        events.append({"id": "chatcmpl-mock-%d" % rec.index, "object": "chat.completion.chunk",
                       "created": created, "model": model,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                                 "total_tokens": pt + ct}})
        lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        lines.append(b"data: [DONE]\n\n")
        try:
            for i, line in enumerate(lines):
                if i > 0 and interval > 0:
                    time.sleep(interval)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
                info["sent_times"].append(time.monotonic())
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            info["completed"] = True
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            info["aborted_at"] = time.monotonic()
            info["error"] = repr(e)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def do_HEAD(self):
        self._handle()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, mock):
        self.mock = mock
        self._conns = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client (the responder) that went away mid-request is no news.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def close_all(self):
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MockUpstream:
    """An upstream on 127.0.0.1 whose answers a test scripts; see the module doc."""

    def __init__(self, name="mock", port=0, verbose=False):
        self.name = name
        self.verbose = verbose
        self._port = port
        self._lock = threading.Lock()
        self._default = {"kind": "chat"}
        self._queue = []
        self.requests = []
        self.streams = []
        self._server = None
        self._thread = None

    # -- life cycle
    def start(self):
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="mock-" + self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None

    @property
    def port(self):
        return self._port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._port

    # -- scripting
    def set(self, kind, **params):
        """Default behaviour for every request not served by a pushed one."""
        with self._lock:
            self._default = dict(params, kind=kind)
        return self

    def push(self, kind, **params):
        """One-shot behaviour for the next request (FIFO)."""
        with self._lock:
            self._queue.append(dict(params, kind=kind))
        return self

    def clear(self):
        with self._lock:
            self.requests = []
            self.streams = []
            self._queue = []

    def _next_behaviour(self):
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            return dict(self._default)

    def _record(self, method, path, headers, body):
        with self._lock:
            rec = Recorded(method, path, headers, body, time.monotonic(), len(self.requests))
            self.requests.append(rec)
            return rec

    # -- queries
    def count(self):
        with self._lock:
            return len(self.requests)

    def with_body(self, needle):
        """Recorded requests whose body contains needle (bytes or str)."""
        if isinstance(needle, str):
            needle = needle.encode("utf-8")
        with self._lock:
            return [r for r in self.requests if needle in r.body]

    def with_header(self, name, value):
        """Recorded requests carrying header name: value."""
        with self._lock:
            return [r for r in self.requests if r.header(name) == value]

    # -- answers
    def _answer(self, beh, model, rec):
        kind = beh["kind"]
        headers = dict(beh.get("headers") or {})
        if kind == "status":
            return int(beh.get("status", 500)), headers, _body_bytes(beh.get("body", ""))
        if kind == "empty":
            return 200, headers, b""
        if kind == "embeddings":
            pt = int(beh.get("prompt_tokens", 4))
            doc = {"object": "list", "model": model,
                   "data": [{"object": "embedding", "index": 0,
                             "embedding": [0.0, 0.1, -0.2]}],
                   "usage": {"prompt_tokens": pt, "total_tokens": pt}}
            return 200, headers, json.dumps(doc).encode()
        if kind in ("chat", "zero_completion"):
            pt, ct = beh.get("usage", (11, 7))
            if kind == "zero_completion":
                ct = 0
            doc = {"id": "chatcmpl-mock-%d" % rec.index, "object": "chat.completion",
                   "created": int(time.time()), "model": model,
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant",
                                            "content": beh.get("content", "hello from " + self.name)}}],
                   "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                             "total_tokens": pt + ct}}
            return 200, headers, json.dumps(doc).encode()
        raise ValueError("unknown behaviour %r" % kind)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Mock OpenAI-compatible upstream")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="mock")
    ap.add_argument("--mode", default="chat",
                    choices=["chat", "embeddings", "status", "empty", "zero_completion",
                             "stream", "close", "refuse"])
    ap.add_argument("--status", type=int, default=500)
    ap.add_argument("--body", default='{"error":{"message":"mock failure","type":"server_error"}}')
    ap.add_argument("--header", action="append", default=[], help="Name: value (status mode)")
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--interval-ms", type=float, default=300)
    ap.add_argument("--delay", type=float, default=0)
    args = ap.parse_args(argv)
    if args.mode == "refuse":
        print("refusing port: %d" % closed_port(), flush=True)
        return 0
    mock = MockUpstream(args.name, port=args.port, verbose=True).start()
    params = {"delay": args.delay}
    if args.mode == "status":
        params.update(status=args.status, body=args.body,
                      headers=dict(h.split(":", 1) for h in args.header))
    if args.mode == "stream":
        params.update(events=args.events, interval_ms=args.interval_ms)
    mock.set(args.mode, **params)
    print("listening on %s" % mock.url, flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            with mock._lock:
                new = mock.requests[seen:]
            for r in new:
                print("%s %s %r %d bytes" % (r.method, r.path, r.headers, len(r.body)), flush=True)
            seen += len(new)
    except KeyboardInterrupt:
        pass
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
