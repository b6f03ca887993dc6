#!/usr/bin/env python3
"""make install into a temporary prefix, then serve through lighttpd with the
installed files only: the program, the example config's place, and the
lighttpd snippet with its installed paths (README, "Deployment").

TAP output, like the other integration tests. Needs the source tree
(API_TOGETHER_BUILDDIR, where make distdir works) and a C toolchain; configures and builds a copy there.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import LIGHTTPD, Checks, free_port  # noqa: E402
from mock_upstream import MockUpstream  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The configured tree whose "make distdir" gives a clean copy of the sources
# (a configured source tree refuses a second, out-of-tree configure).
BUILDDIR = os.environ.get("API_TOGETHER_BUILDDIR", TOP)

checks = Checks()
check = checks.add


def run(cmd, cwd, log):
    with open(log, "ab") as out:
        return subprocess.call(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def http(port, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body,
                                 headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    tmp = tempfile.mkdtemp(prefix="api-together-install-")
    prefix, build, log = os.path.join(tmp, "prefix"), os.path.join(tmp, "build"), \
        os.path.join(tmp, "build.log")
    os.mkdir(build)
    mock = MockUpstream("install").start()
    mock.set("chat", usage=(2, 3))
    lighttpd = None
    try:
        src = os.path.join(tmp, "src")
        rc = run(["make", "distdir", "distdir=" + src], BUILDDIR, log)
        if rc == 0:
            rc = run([os.path.join(src, "configure"), "--prefix=" + prefix], build, log)
        if rc == 0:
            rc = run(["make", "-j2", "install"], build, log)
        check("configure --prefix and make install succeed", rc == 0,
              open(log, errors="replace").read()[-3000:])
        if rc != 0:
            return
        etc = os.path.join(prefix, "etc", "api-together")
        for rel in ("bin/api-together", "share/man/man8/api-together.8",
                    "etc/api-together/apis.json", "etc/api-together/lighttpd.conf",
                    "etc/api-together/apache/api-together-fcgid.conf",
                    "etc/api-together/apache/api-together-proxy-fcgi.conf",
                    "etc/api-together/apache/htaccess-fcgid",
                    "etc/api-together/apache/api-together.service"):
            check("installs " + rel, os.path.isfile(os.path.join(prefix, rel)))
        snippet = open(os.path.join(etc, "lighttpd.conf")).read()
        check("lighttpd snippet has the installed paths filled in",
              os.path.join(prefix, "bin", "api-together") in snippet and
              "@API_TOGETHER" not in snippet,
              snippet[:400])
        man = subprocess.run(["man", "-l", os.path.join(prefix, "share/man/man8/api-together.8")],
                             capture_output=True, text=True,
                             env=dict(os.environ, MANWIDTH="80"))
        check("man page renders with OPTIONS, ENVIRONMENT, FILES and EXAMPLES",
              man.returncode == 0 and all(s in man.stdout for s in
                                          ("OPTIONS", "ENVIRONMENT", "FILES", "EXAMPLES")),
              man.stderr[-500:])

        # A second install keeps an edited config.
        conf = os.path.join(etc, "apis.json")
        cfg = {"server": {"port": 3001, "apiKey": "sk-install"},
               "apis": [{"id": "m", "baseUrl": mock.url, "apiKey": "up",
                         "models": ["gpt-4o"]}]}
        with open(conf, "w") as f:
            json.dump(cfg, f)
        rc = run(["make", "install"], build, log)
        check("make install again keeps an existing apis.json",
              rc == 0 and json.load(open(conf)) == cfg)

        # lighttpd with nothing but an include of the installed snippet.
        port = free_port()
        www = os.path.join(tmp, "www")
        os.mkdir(www)
        lconf = os.path.join(tmp, "lighttpd.conf")
        with open(lconf, "w") as f:
            f.write('server.port = %d\nserver.bind = "127.0.0.1"\n'
                    'server.document-root = "%s"\nserver.errorlog = "%s/error.log"\n'
                    'include "%s"\n' % (port, www, tmp, os.path.join(etc, "lighttpd.conf")))
        lighttpd = subprocess.Popen([LIGHTTPD, "-D", "-f", lconf], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        status = None
        for _ in range(100):
            try:
                status, body = http(port, "/health")
                break
            except OSError:
                time.sleep(0.1)
        check("installed responder answers /health through lighttpd", status == 200,
              "status %r" % status)
        status, body = http(port, "/v1/chat/completions",
                            body=b'{"model":"gpt-4o","messages":[]}', key="sk-install")
        check("installed responder forwards a chat request", status == 200 and
              mock.count() == 1 and mock.requests[0].header("Authorization") == "Bearer up",
              "status %r body %r" % (status, body[:300]))
        state = os.path.join(prefix, "var", "lib", "api-together", "state.db")
        check("state file in the installed state folder, mode 0600",
              os.path.isfile(state) and (os.stat(state).st_mode & 0o777) == 0o600)
        rlog = os.path.join(prefix, "var", "log", "api-together.log")
        logged = False
        for _ in range(50):  # the line is written just after the answer
            logged = os.path.isfile(rlog) and "/v1/chat/completions" in open(rlog).read()
            if logged:
                break
            time.sleep(0.1)
        check("responder log lines go to the installed log file", logged)
    finally:
        if lighttpd is not None:
            try:
                os.killpg(lighttpd.pid, 15)
            except ProcessLookupError:
                pass
            lighttpd.wait(timeout=10)
        mock.stop()
        if checks.all_passed():
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    checks.run(main, "install test")
