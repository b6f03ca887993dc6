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
    embeddings       200 embeddings list JSON (usage without completion_tokens);
                     each vector as base64 of little-endian float32s when the
                     request asks for encoding_format "base64", as OpenAI does
                     (the official clients ask for it by default)
    status           status=N, body=str|bytes|dict, headers={...}

Per key (key pools): set_key(key, kind, **params) answers every request whose
"Authorization: Bearer KEY" is key so (one-shot pushes still come first);
each recorded request has .key, the key it carried (None without one), and
keys() lists them in order.
    empty            200 with an empty body (Content-Length: 0)
    zero_completion  200 chat.completion whose usage has completion_tokens 0
    stream           events=N content chunks interval_ms=D apart, then a chunk
                     with usage, then "data: [DONE]"; chunked encoding, one HTTP
                     chunk per event, each written at once; close_after=K closes
                     the connection right after the K-th content event (no usage
                     event, no [DONE], no chunked terminator); lockstep=True
                     writes each event after the first only once the test
                     called ack() for the one before (10 s at most, then
                     streams[i]["ack_missed"] is set and it writes anyway);
                     usage_chunk=True streams as OpenAI does: no usage in the
                     last content chunk, a usage-only chunk (empty choices)
                     only when stream_options.include_usage is true; the
                     event bytes meant to be sent are in streams[i]["body"]
    close            read the request, then close the connection without answering
    garbage          read the request, write data=bytes (default b"HELLO\r\n\r\n",
                     no HTTP status line) on the raw socket, then close
    hang             read the request, then send nothing: hold the connection
                     until the other side closes it (or seconds=S pass, default
                     60, or the mock stops); see hangs
    big              a large answer made on the fly (the mock never holds it):
                     total_bytes=N (default 50 MiB) of body, written piece by
                     piece (chunk_bytes=K, default 16 KiB); format="sse" (the
                     default: a text/event-stream of content events, a usage
                     event and "data: [DONE]", chunked) or "json" (one
                     chat.completion with a huge content, Content-Length); the
                     sha256 and length of the body sent are recorded in streams
    auto             "stream" when the request's JSON body has "stream": true, else
                     "chat"; usage=(p, c) for chat, stream_usage=(p, c) for streams

Every behaviour takes delay=SECONDS (sleep before answering). A port that
refuses connections: closed_port().

Every request is recorded (method, path with query, headers, raw body, time,
and peer: the (address, port) of the connection it came on); every streamed
answer ("stream" and "big") is recorded in streams (time of each event written,
when a write failed because the other side had gone, and peer_closed_at: when
the mock first saw the other side close the connection while it was between two
writes); every "hang" in hangs (request_index, started_at, peer_closed_at,
ended_at).
"""

import argparse
import base64
import hashlib
import json
import select
import socket
import struct
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
        self.peer = None  # (address, port) of the connection it came on
        auth = self.header("Authorization") or ""
        self.key = auth[len("Bearer "):] if auth.startswith("Bearer ") else None

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


def _json_field(body, name):
    """The top-level field name of a JSON object body, or None."""
    try:
        j = json.loads(body.decode("utf-8")) if body else None
    except (ValueError, UnicodeDecodeError):
        return None
    return j.get(name) if isinstance(j, dict) else None


def _readable(sock, timeout):
    """True when sock has data, EOF or an error waiting (poll: no FD_SETSIZE
    limit); raises OSError or ValueError for a closed socket."""
    p = select.poll()
    p.register(sock, select.POLLIN | select.POLLPRI)
    return bool(p.poll(max(0, int(timeout * 1000))))


def _peer_closed(sock):
    """True when the other side of sock has closed it (EOF or an error is
    waiting); never blocks, never consumes data."""
    try:
        if not _readable(sock, 0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_watching(sock, seconds, info):
    """Sleeps seconds; notes in info["peer_closed_at"] when the other side
    closes sock meanwhile (the first time only)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        if info.get("peer_closed_at") is not None:
            time.sleep(left)
            return
        try:
            r = _readable(sock, min(left, 0.5))
        except (OSError, ValueError):
            time.sleep(left)
            return
        if r and _peer_closed(sock):
            info["peer_closed_at"] = time.monotonic()
        elif r:
            time.sleep(min(left, 0.01))  # data waiting (not expected): do not spin


_BIG_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _big_block():
    """A fixed 64 KiB block of JSON-safe pseudo-random characters."""
    import random
    rnd = random.Random(1234567)
    return bytes(rnd.choice(_BIG_ALPHABET) for _ in range(65536))


_BIG_BLOCK = None


def _big_content(i, n):
    """n content bytes for piece i: slices of the fixed block, a different
    offset each time, so a lost or repeated piece changes the hash."""
    global _BIG_BLOCK
    if _BIG_BLOCK is None:
        _BIG_BLOCK = _big_block()
    out = bytearray()
    off = (i * 7919) % len(_BIG_BLOCK)
    while len(out) < n:
        take = min(n - len(out), len(_BIG_BLOCK) - off)
        out += _BIG_BLOCK[off:off + take]
        off = 0
    return bytes(out)


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
        rec.peer = self.client_address
        beh = mock._next_behaviour(rec.key)
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
            if kind == "garbage":
                self._garbage(beh)
                return
            if kind == "hang":
                self._hang(beh, rec)
                return
            if kind == "big":
                self._big(beh, rec, model)
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
        close_after = beh.get("close_after")
        info = {"request_index": rec.index, "sent_times": [], "aborted_at": None,
                "completed": False, "error": None, "started_at": time.monotonic(),
                "peer_closed_at": None, "closed_by_mock_at": None, "ack_missed": False}
        lockstep = bool(beh.get("lockstep"))
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
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        last = {"id": "chatcmpl-mock-%d" % rec.index, "object": "chat.completion.chunk",
                "created": created, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if beh.get("usage_chunk"):
            # As OpenAI does: the usage in a chunk of its own, with empty
            # choices, only when stream_options.include_usage asks for it.
            events.append(last)
            opts = _json_field(rec.body, "stream_options")
            if isinstance(opts, dict) and opts.get("include_usage") is True:
                events.append({"id": "chatcmpl-mock-%d" % rec.index,
                               "object": "chat.completion.chunk", "created": created,
                               "model": model, "choices": [], "usage": usage})
        else:
            events.append(dict(last, usage=usage))
        lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        lines.append(b"data: [DONE]\n\n")
        info["body"] = b"".join(lines)
        try:
            for i, line in enumerate(lines):
                if i > 0 and interval > 0:
                    _wait_watching(self.connection, interval, info)
                if i > 0 and lockstep and not mock._acks.acquire(timeout=10):
                    info["ack_missed"] = True
                if close_after is not None and i >= int(close_after):
                    # Stamped before the close: once the socket is closed the
                    # test may read info while this thread is not yet back.
                    info["closed_by_mock_at"] = time.monotonic()
                    self._abrupt_close()
                    return
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

    def _abrupt_close(self):
        """Ends the connection at once, mid-answer."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _garbage(self, beh):
        data = beh.get("data", b"HELLO\r\n\r\n")
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.close_connection = True
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return
        self._abrupt_close()

    def _hang(self, beh, rec):
        mock = self.server.mock
        limit = float(beh.get("seconds", 60))
        info = {"request_index": rec.index, "started_at": time.monotonic(),
                "peer_closed_at": None, "ended_at": None}
        with mock._lock:
            mock.hangs.append(info)
        self.close_connection = True
        end = info["started_at"] + limit
        while time.monotonic() < end and mock._server is not None:
            try:
                r = _readable(self.connection, 0.05)
            except (OSError, ValueError):
                break
            if r:
                if _peer_closed(self.connection):
                    info["peer_closed_at"] = time.monotonic()
                    break
                time.sleep(0.01)
        info["ended_at"] = time.monotonic()

    def _big(self, beh, rec, model):
        """A large answer made piece by piece: the mock never holds it."""
        mock = self.server.mock
        total = int(beh.get("total_bytes", 50 * 1024 * 1024))
        piece = max(64, int(beh.get("chunk_bytes", 16384)))
        fmt = beh.get("format", "sse")
        pt, ct = beh.get("usage", (5, 3))
        info = {"request_index": rec.index, "sent_times": [], "aborted_at": None,
                "completed": False, "error": None, "started_at": time.monotonic(),
                "peer_closed_at": None, "closed_by_mock_at": None, "format": fmt,
                "bytes_sent": 0, "sha256": None, "events": 0}
        with mock._lock:
            mock.streams.append(info)
        h = hashlib.sha256()
        created = int(time.time())
        cid = "chatcmpl-big-%d" % rec.index

        def put(data, chunked):
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            h.update(data)
            info["bytes_sent"] += len(data)

        self.send_response(int(beh.get("status", 200)))
        self.send_header("X-Mock-Name", mock.name)
        try:
            if fmt == "json":
                usage = json.dumps({"prompt_tokens": pt, "completion_tokens": ct,
                                    "total_tokens": pt + ct}).encode()
                head = ('{"id":"%s","object":"chat.completion","created":%d,"model":%s,'
                        '"choices":[{"index":0,"finish_reason":"stop","message":'
                        '{"role":"assistant","content":"' % (cid, created, json.dumps(model))
                        ).encode()
                tail = b'"}}],"usage":' + usage + b"}"
                n_content = max(0, total - len(head) - len(tail))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(head) + n_content + len(tail)))
                self.end_headers()
                put(head, False)
                i = 0
                left = n_content
                while left > 0:
                    n = min(piece, left)
                    put(_big_content(i, n), False)
                    left -= n
                    i += 1
                put(tail, False)
            else:
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                pre = ('data: {"id":"%s","object":"chat.completion.chunk","created":%d,'
                       '"model":%s,"choices":[{"index":0,"delta":{"content":"'
                       % (cid, created, json.dumps(model))).encode()
                post = b'"},"finish_reason":null}]}\n\n'
                n_content = max(1, piece - len(pre) - len(post))
                i = 0
                while info["bytes_sent"] < total:
                    put(pre + _big_content(i, n_content) + post, True)
                    info["events"] += 1
                    i += 1
                last = {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": pt, "completion_tokens": ct,
                                  "total_tokens": pt + ct}}
                put(b"data: " + json.dumps(last).encode() + b"\n\n", True)
                put(b"data: [DONE]\n\n", True)
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            info["completed"] = True
        except (BrokenPipeError, ConnectionResetError, OSError) as e:
            info["aborted_at"] = time.monotonic()
            info["error"] = repr(e)
            self.close_connection = True
        finally:
            info["sha256"] = h.hexdigest()
            info["ended_at"] = time.monotonic()

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
        self._per_key = {}
        self.requests = []
        self.streams = []
        self.hangs = []
        self._acks = threading.Semaphore(0)
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

    def ack(self):
        """A lockstep stream may write its next event: the test has the last."""
        self._acks.release()

    def set_key(self, key, kind, **params):
        """Behaviour for every request carrying key (None: back to the default)."""
        with self._lock:
            if kind is None:
                self._per_key.pop(key, None)
            else:
                self._per_key[key] = dict(params, kind=kind)
        return self

    def clear(self):
        with self._lock:
            self.requests = []
            self.streams = []
            self.hangs = []
            self._queue = []
            self._per_key = {}

    def _next_behaviour(self, key=None):
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
            if key in self._per_key:
                return dict(self._per_key[key])
            return dict(self._default)

    def _record(self, method, path, headers, body):
        with self._lock:
            rec = Recorded(method, path, headers, body, time.monotonic(), len(self.requests))
            self.requests.append(rec)
            return rec

    # -- queries
    def keys(self):
        """The key each recorded request carried, in order (None: none)."""
        with self._lock:
            return [r.key for r in self.requests]

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
            vector = [0.0, 0.1, -0.2]
            embedding = vector
            if _json_field(rec.body, "encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack("<%df" % len(vector), *vector)).decode()
            doc = {"object": "list", "model": model,
                   "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
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
                             "stream", "close", "refuse", "garbage", "hang", "big"])
    ap.add_argument("--status", type=int, default=500)
    ap.add_argument("--body", default='{"error":{"message":"mock failure","type":"server_error"}}')
    ap.add_argument("--header", action="append", default=[], help="Name: value (status mode)")
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--interval-ms", type=float, default=300)
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--close-after", type=int, default=None,
                    help="stream: close the connection after this many events")
    ap.add_argument("--total-bytes", type=int, default=50 * 1024 * 1024, help="big")
    ap.add_argument("--format", default="sse", choices=["sse", "json"], help="big")
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
        if args.close_after is not None:
            params.update(close_after=args.close_after)
    if args.mode == "big":
        params.update(total_bytes=args.total_bytes, format=args.format)
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
