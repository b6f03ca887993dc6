#!/usr/bin/env python3
"""scripts/quickstart --demo from a fresh clone, run as README says (issue 17
point 1): in a copy of the sources without what autoreconf makes (as a clone
has them), the quickstart builds, starts lighttpd with the responders and the
demo upstream, and README's curl lines answer: health, a chat, a stream that
streams, an embedding. Then the status shows the traffic, the page draws it,
the config the quickstart wrote is mode 0600 and the log holds no "readable
by every user" warning; Ctrl+C, typed into the terminal it runs in (a
pseudo-terminal of the test's), stops lighttpd, every responder and the demo
upstream.

TAP output, like the other integration tests. Needs the configured tree
(API_TOGETHER_BUILDDIR, where make distdir works), a C toolchain, autoreconf
and the build's Debian packages; no network. QUICKSTART_PORT gives the
quickstart a free port (README documents it).
"""

import fcntl
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Checks, free_port  # noqa: E402
from test_status_page import chromium, chromium_missing  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILDDIR = os.environ.get("API_TOGETHER_BUILDDIR", TOP)
# The build from nothing (autoreconf, configure, make) on a loaded machine.
START_TIMEOUT_S = 900
# What a clone lacks that make distdir writes: autoreconf makes them.
NOT_IN_A_CLONE = ("configure", "Makefile.in", "aclocal.m4", "build-aux")
# The demo upstream writes a streamed answer a word every 50 ms, more than
# 30 words: at least 1.5 s from its first event to its last. A stream held
# back anywhere arrives in one piece; the slack is for a loaded machine.
STREAM_SPREAD_S = 0.4

checks = Checks()
check = checks.add


def readme_curls(readme):
    """The curl commands of README's first sh block that has any, each as
    its argument list (continued lines joined)."""
    for block in re.findall(r"```sh\n(.*?)```", readme, re.S):
        text = block.replace("\\\n", " ")
        cmds = [shlex.split(line) for line in text.splitlines()
                if line.strip().startswith("curl ")]
        if cmds:
            return cmds
    return []


def curl_request(args, port):
    """(method, path, headers, body, stream) of a curl command line, aimed
    at the quickstart's port instead of 3001."""
    url, headers, body, stream = None, {}, None, False
    it = iter(args[1:])
    for a in it:
        if a == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif a == "-d":
            body = next(it).encode()
        elif a == "-N":
            stream = True
        elif a.startswith("http"):
            url = a
        else:
            raise ValueError("curl option the test does not know: %s" % a)
    m = re.match(r"http://localhost:3001(/.*)$", url or "")
    if not m:
        raise ValueError("curl line not aimed at localhost:3001: %s" % url)
    return ("POST" if body is not None else "GET"), m.group(1), headers, body, stream


def send(port, method, path, headers=None, body=None, timeout=30):
    """(status, headers, [(monotonic time, bytes read)]): the answer read as
    it comes, so a stream's pieces keep their arrival times."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        pieces = []
        while True:
            data = r.read1(65536)
            if not data:
                break
            pieces.append((time.monotonic(), data))
        return r.status, {k.lower(): v for k, v in r.getheaders()}, pieces
    finally:
        conn.close()


def sse_events(pieces):
    """[(arrival time, data of one event)] of a text/event-stream."""
    events, buf = [], b""
    for t, data in pieces:
        buf += data
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append((t, line[6:].decode()))
    return events


def session_processes(sid):
    """Live (not zombie) processes of session sid: pid -> command."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[3]) == sid:
            out[int(pid)] = cmd
    return out


def kill_session(sid):
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_in_terminal(cmd, cwd, env, log):
    """Runs cmd as a terminal's foreground job: in a session of its own with
    a pseudo-terminal as its controlling terminal, whose output a thread
    copies to the file log. Returns (process, the terminal's master side)."""
    master, slave = os.openpty()

    def as_a_terminal_job():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # What a shell in a terminal starts gets SIGINT and SIGQUIT at their
        # defaults. This test may itself run with them ignored (started in
        # the background of a shell without job control, as with "cmd &" in
        # a script): inherited, the quickstart could not trap Ctrl+C (a
        # shell cannot trap a signal ignored when it started) and would
        # never stop.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=as_a_terminal_job)
    os.close(slave)

    def copy():
        with open(log, "ab") as out:
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal is gone
                    return
                if not data:
                    return
                out.write(data)
                out.flush()
    threading.Thread(target=copy, daemon=True).start()
    return proc, master


def port_open(port):
    """True when something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def health_ok(port):
    try:
        return send(port, "GET", "/health", timeout=5)[0] == 200
    except OSError:
        return False


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def user_env(port):
    """The environment of a user's shell: nothing of make check's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("API_TOGETHER_", "MAKE", "MFLAGS"))}
    env["QUICKSTART_PORT"] = str(port)
    return env


def exercise(src, port, log_text):
    """README's curl lines and what the status shows of them."""
    cmds = readme_curls(open(os.path.join(src, "README.md"), encoding="utf-8").read())
    kinds = []
    forwarded = 0
    for args in cmds:
        method, path, headers, body, stream = curl_request(args, port)
        status, hdrs, pieces = send(port, method, path, headers, body)
        text = b"".join(p for _, p in pieces).decode(errors="replace")
        line = " ".join(args)[:120]
        check("README's %s answers 200" % line, status == 200, "%s %s" % (status, text[:500]))
        if path == "/health":
            kinds.append("health")
            continue
        forwarded += 1
        if stream:
            kinds.append("stream")
            events = sse_events(pieces)
            chunks = [json.loads(d) for _, d in events if d != "[DONE]"]
            said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                           if c.get("choices"))
            check("the stream is a text/event-stream from the demo, ending in [DONE]",
                  hdrs.get("content-type", "").startswith("text/event-stream") and
                  "demo upstream" in said and events and events[-1][1] == "[DONE]" and
                  any(c.get("usage") for c in chunks), text[:1500])
            spread = events[-1][0] - events[0][0] if events else 0
            check("the stream streams: %d events over %.2f s (at least %.1f s)"
                  % (len(events), spread, STREAM_SPREAD_S),
                  len(events) > 10 and spread >= STREAM_SPREAD_S)
        elif path == "/v1/embeddings":
            kinds.append("embedding")
            doc = json.loads(text) if status == 200 else {}
            vec = (doc.get("data") or [{}])[0].get("embedding")
            check("the embedding is a vector of numbers", isinstance(vec, list) and vec and
                  all(isinstance(x, float) for x in vec), text[:500])
        elif path == "/v1/chat/completions":
            kinds.append("chat")
            doc = json.loads(text) if status == 200 else {}
            said = ((doc.get("choices") or [{}])[0].get("message") or {}).get("content", "")
            check("the chat answer says it comes from the demo", "demo upstream" in said,
                  text[:500])
    check("README's curl lines are health, a chat, a stream and an embedding",
          sorted(kinds) == ["chat", "embedding", "health", "stream"], repr(kinds))

    status, _, pieces = send(port, "GET", "/v1/status", {"Authorization": "Bearer sk-123"})
    doc = json.loads(b"".join(p for _, p in pieces)) if status == 200 else {}
    apis = doc.get("apis") or []
    config = os.path.join(src, "run", "demo", "apis.json")
    check("v1/status: two demo endpoints with limits, every request counted, tokens",
          [a["id"] for a in apis] == ["demo-a", "demo-b"] and
          all(a["limits"]["rpm"] > 0 and a["limits"]["rpd"] > 0 for a in apis) and
          sum(a["usage"]["rpd"] for a in apis) == forwarded and
          sum(a["tokensToday"]["total"] for a in apis) > 0, json.dumps(doc)[:2000])
    check("v1/status: the config in force is the demo's, none rejected",
          (doc.get("config") or {}).get("path") == os.path.realpath(config) and
          doc["config"]["rejected"] is None, json.dumps(doc.get("config")))
    check("the demo config is mode 0600", os.stat(config).st_mode & 0o777 == 0o600,
          oct(os.stat(config).st_mode))
    if not chromium_missing():
        dom = chromium("http://127.0.0.1:%d/status?key=sk-123" % port, "--dump-dom")
        used = [int(n) for n in re.findall(r'data-kind="rpd" data-used="(\d+)"', dom)]
        check("the status page draws both demo endpoints and the traffic",
              re.findall(r'<article class="card" data-id="([^"]+)">', dom) ==
              ["demo-a", "demo-b"] and sum(used) == forwarded, dom[-2000:])
    log = log_text()
    check("the log has the responders' start lines", "loaded, 2 endpoints" in log, log[-2000:])
    check("no warning of a file readable by every user", "readable by every user" not in log,
          log[-3000:])


def missing_packages():
    """The Debian packages of the build (scripts/deps.sh) not installed here:
    the quickstart would fetch them (as root) or stop, and this test runs
    without network. None when there is no dpkg at all."""
    if shutil.which("dpkg-query") is None:
        return None
    names = subprocess.run(["bash", "-c", '. scripts/deps.sh && echo "${DEPS_BUILD[@]}"'],
                           cwd=TOP, capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", n], capture_output=True,
        text=True).stdout != "install ok installed"]


def main():
    missing = missing_packages()
    if missing is None or missing:
        why = "no dpkg-query" if missing is None else "not installed: " + " ".join(missing)
        print("ok 1 # SKIP the quickstart's packages (%s)" % why)
        print("1..1")
        sys.exit(0)
    tmp = tempfile.mkdtemp(prefix="api-together-quickstart-")
    src, log = os.path.join(tmp, "src"), os.path.join(tmp, "quickstart.log")
    proc = terminal = None
    try:
        with open(log, "wb") as out:
            rc = subprocess.call(["make", "distdir", "distdir=" + src], cwd=BUILDDIR,
                                 stdout=out, stderr=subprocess.STDOUT)
        if not check("make distdir gives a copy of the sources", rc == 0,
                     open(log, errors="replace").read()[-2000:]):
            return
        for name in NOT_IN_A_CLONE:
            path = os.path.join(src, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        os.makedirs(os.path.join(src, "m4"), exist_ok=True)  # a clone has m4/.keep
        port = free_port()

        def log_text():
            return open(log, errors="replace").read()

        open(log, "wb").close()
        proc, terminal = start_in_terminal(["scripts/quickstart", "--demo"], src,
                                           user_env(port), log)
        up = wait_until(lambda: proc.poll() is not None or health_ok(port), START_TIMEOUT_S)
        if not check("scripts/quickstart --demo builds and serves /health",
                     up and proc.poll() is None, log_text()[-3000:]):
            return
        upstream_port = int(open(os.path.join(src, "run", "demo", "upstream.port")).read())
        exercise(src, port, log_text)

        os.write(terminal, b"\x03")  # Ctrl+C
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        check("Ctrl+C stops the quickstart", proc.poll() is not None)
        check("the demo upstream stops with it",
              wait_until(lambda: not port_open(upstream_port), 10))
        check("no process of the quickstart is left",
              wait_until(lambda: not session_processes(proc.pid), 10),
              repr(session_processes(proc.pid)))
    finally:
        if proc is not None:
            kill_session(proc.pid)
            proc.wait(timeout=10)
        if terminal is not None:
            os.close(terminal)
        if checks.all_passed():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("# kept for a look: %s" % tmp)


if __name__ == "__main__":
    checks.run(main, "quickstart test")
