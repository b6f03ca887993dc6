#!/usr/bin/env python3
"""The demo upstream of `scripts/quickstart --demo`: a small OpenAI-compatible
server on 127.0.0.1 that answers without any model, so that the gateway can
be seen working before any key of a real provider is at hand.

Python 3 standard library only. Every path's first segment names the demo
endpoint that answers (the demo config gives each endpoint a baseUrl such as
http://127.0.0.1:PORT/demo-a/v1), and every answer says it comes from here:

    POST .../v1/chat/completions   a chat.completion; with "stream": true, a
                                   text/event-stream of chunks, one word each,
                                   then a chunk with usage and "data: [DONE]"
    POST .../v1/embeddings         a vector per input, the same for the same
                                   text (base64 when encoding_format asks)
    GET  .../v1/models             demo-chat and demo-embedding

Token counts are the words of the messages and of the answer.

    python3 scripts/demo_upstream.py [--port N] [--port-file FILE] [--parent PID]

--port 0 (the default) takes a free port; --port-file writes the port there
once the server listens; --parent makes it end when that process is gone
(the quickstart passes its own: were the quickstart killed, nothing else
would stop this one). SIGTERM ends it, as the quickstart does when it stops.
"""

import argparse
import base64
import hashlib
import json
import os
import signal
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = ("demo-chat", "demo-embedding")
WORD_INTERVAL_S = 0.05  # between two streamed words: slow enough to see
DIMENSIONS = 8
MAX_BODY = 1 << 20


def _words(text):
    return len(text.split())


def _prompt_text(body):
    """The text of the messages (chat) or of input (embeddings)."""
    parts = []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # [{"type": "text", "text": ...}]
            parts.extend(c.get("text", "") for c in content
                         if isinstance(c, dict) and isinstance(c.get("text"), str))
    return " ".join(parts)


def _last_user_text(body):
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def _reply(endpoint, body):
    said = " ".join(_last_user_text(body).split())
    if len(said) > 80:
        said = said[:77] + "..."
    return ('Hello from the api-together demo upstream, endpoint "%s": this answer was '
            'made up on this machine, no model was asked. You said: "%s". Run '
            "scripts/quickstart with your own apis.json to reach a real provider."
            % (endpoint, said))


def _vector(text):
    """A unit vector drawn from the text's digest: the same text, the same vector."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    v = [(b - 127.5) / 127.5 for b in digest[:DIMENSIONS]]
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in v]


class DemoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the gateway reuses connections
    server_version = "api-together-demo"

    def log_message(self, fmt, *args):  # quiet: the gateway logs each request
        pass

    def _split(self):
        """(endpoint, what): the first path segment and the rest after /v1/."""
        path = self.path.split("?", 1)[0]
        segments = [s for s in path.split("/") if s]
        endpoint = segments[0] if segments and segments[0] != "v1" else "demo"
        rest = "/".join(segments)
        i = rest.find("v1/")
        return endpoint, rest[i + 3:] if i >= 0 else rest

    def _send_json(self, status, doc):
        payload = json.dumps(doc).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status, message, code):
        self._send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                           "code": code}})

    def _read_json(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return None
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def do_GET(self):
        endpoint, what = self._split()
        if what != "models":
            self._error(404, "The demo upstream has no %s." % self.path, "not_found")
            return
        self._send_json(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": endpoint}
            for m in MODELS]})

    do_HEAD = do_GET

    def do_POST(self):
        endpoint, what = self._split()
        body = self._read_json()
        if body is None:
            self._error(400, "The demo upstream takes a JSON object.", "invalid_json")
        elif what == "chat/completions":
            self._chat(endpoint, body)
        elif what == "embeddings":
            self._embeddings(endpoint, body)
        else:
            self._error(404, "The demo upstream has no %s." % self.path, "not_found")

    def _chat(self, endpoint, body):
        model = body.get("model") if isinstance(body.get("model"), str) else MODELS[0]
        text = _reply(endpoint, body)
        usage = {"prompt_tokens": _words(_prompt_text(body)), "completion_tokens": _words(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident = "chatcmpl-demo-%d" % time.monotonic_ns()
        created = int(time.time())
        if body.get("stream") is True:
            self._stream(ident, created, model, text, usage)
            return
        self._send_json(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage})

    def _stream(self, ident, created, model, text, usage):
        def chunk(delta, finish=None, **extra):
            doc = {"id": ident, "object": "chat.completion.chunk", "created": created,
                   "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            doc.update(extra)
            return b"data: " + json.dumps(doc).encode("utf-8") + b"\n\n"

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        words = text.split(" ")
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
        events.append(chunk({}, "stop", usage=usage))
        events.append(b"data: [DONE]\n\n")
        try:
            for i, e in enumerate(events):
                if 1 < i < len(events) - 1:
                    time.sleep(WORD_INTERVAL_S)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(e), e))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away
            self.close_connection = True

    def _embeddings(self, endpoint, body):
        model = body.get("model") if isinstance(body.get("model"), str) else MODELS[1]
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            self._error(400, "The demo upstream embeds a string or a list of strings.",
                        "invalid_input")
            return
        data = []
        for i, t in enumerate(inputs):
            v = _vector(t)
            if body.get("encoding_format") == "base64":  # as the OpenAI clients ask
                v = base64.b64encode(struct.pack("<%df" % len(v), *v)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": v})
        tokens = sum(_words(t) for t in inputs)
        self._send_json(200, {"object": "list", "model": model, "data": data,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _watch_parent(parent, server):
    """Ends the server once parent is gone (this process then has another
    parent), however the quickstart ended."""
    while os.getppid() == parent:
        time.sleep(0.5)
    server.shutdown()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--parent", type=int)
    args = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), DemoHandler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.parent is not None:
        threading.Thread(target=_watch_parent, args=(args.parent, server), daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % server.server_address[1])
        os.replace(tmp, args.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl+C when run by hand
        pass
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
