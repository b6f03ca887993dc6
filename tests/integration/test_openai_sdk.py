#!/usr/bin/env python3
"""The official OpenAI client (the npm package "openai", version pinned in
openai_sdk/package.json and package-lock.json) through lighttpd: what an
application written against OpenAI sees when it is pointed at api-together.

Each case runs openai_sdk.mjs under Node.js with the gateway's base URL and
key: a chat, a streamed chat, embeddings (the SDK's default base64 form and
floats), the gateway's model list, and the errors the SDK turns into its own
classes: a wrong key (AuthenticationError), an unknown model (NotFoundError)
and a rate limit (RateLimitError, with the Retry-After the SDK read). Two more
measure how long the SDK waits before its retry of a 429: the Retry-After the
gateway sent when it is under a minute, its own short backoff when it is not.

The package is installed with `npm ci` (exactly the committed lockfile) into
the build tree's tests/.cache/openai when it is not there yet, so the first
run needs the npm registry. Without Node.js every case is skipped; with
Node.js, a failed install fails the test (it is not skipped).

Lighttpd only: the other servers change nothing the SDK could see that
test_http.py does not already pin. TAP on stdout, as test_http.py.

    python3 tests/integration/test_openai_sdk.py [-v] [Class.test_name ...]
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
os.environ["API_TOGETHER_TEST_SERVER"] = "lighttpd"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402
from test_http import CLIENT_KEY  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "openai_sdk.mjs")
PACKAGE_DIR = os.path.join(HERE, "openai_sdk")  # package.json + package-lock.json
BUILDDIR = os.environ.get("API_TOGETHER_BUILDDIR") or harness.SRCDIR
CACHE = os.path.join(BUILDDIR, "tests", ".cache", "openai")
NODE = os.environ.get("NODE") or shutil.which("node")
NPM = os.environ.get("NPM") or shutil.which("npm")
# The wait of the SDK's retry may exceed the Retry-After it read by this much
# (timers, a loaded machine), never fall short of it by more than a tick.
RETRY_SLACK_MS = 600


def pinned_version():
    with open(os.path.join(PACKAGE_DIR, "package.json"), encoding="utf-8") as f:
        return json.load(f)["dependencies"]["openai"]


def _digest(paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def install_sdk():
    """Installs the pinned package into CACHE unless the same lockfile was
    installed there already. Returns None, or why it could not (a failure)."""
    files = [os.path.join(PACKAGE_DIR, n) for n in ("package.json", "package-lock.json")]
    want = _digest(files)
    stamp = os.path.join(CACHE, ".installed")
    try:
        with open(stamp, encoding="utf-8") as f:
            if f.read().strip() == want and os.path.exists(
                    os.path.join(CACHE, "node_modules", "openai", "package.json")):
                return None
    except OSError:
        pass
    if not NPM:
        return "npm not found (Debian package npm), needed to install openai@%s" % pinned_version()
    os.makedirs(CACHE, exist_ok=True)
    for p in files:
        shutil.copyfile(p, os.path.join(CACHE, os.path.basename(p)))
    # npm ci: exactly the lockfile's versions and hashes, or an error.
    argv = [NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    try:
        p = subprocess.run(argv, cwd=CACHE, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "%s in %s: %s" % (" ".join(argv[1:]), CACHE, e)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        return ("%s in %s failed (exit %d); the npm registry must be reachable\n%s"
                % (" ".join(argv[:2]), CACHE, p.returncode, tail))
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(want + "\n")
    return None


def installed_version():
    with open(os.path.join(CACHE, "node_modules", "openai", "package.json"),
              encoding="utf-8") as f:
        return json.load(f)["version"]


class SdkBase(th.Base):
    def sdk(self, case, gw=None, key=CLIENT_KEY, timeout=90, **params):
        """Runs one case of openai_sdk.mjs against gw; returns what it printed."""
        gw = gw or self.gw
        args = dict(params, case=case, apiKey=key,
                    baseURL="http://127.0.0.1:%d%s" % (gw.port, gw.url_path("/v1")))
        script = os.path.join(CACHE, "openai_sdk.mjs")
        p = subprocess.run([NODE, script, json.dumps(args)], cwd=CACHE, capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            self.fail("openai_sdk.mjs %s exited %d:\n%s%s" % (case, p.returncode, p.stderr,
                                                              p.stdout))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        self.assertTrue(out.get("ok"), out)
        return out

    def one_endpoint(self, kind="chat", **api_kw):
        """One mock upstream answering kind, serving a model of the test's own."""
        m = self.mock("up", kind)
        model = "m-" + self.uid("m")
        self.configure([self.api(self.uid("a"), m.url, [model], **api_kw)])
        return m, model


class O01Chat(SdkBase):
    def test_chat_completion_content_and_usage(self):
        m, model = self.one_endpoint()
        out = self.sdk("chat", model=model, content="hello from up")
        self.assertEqual(out["model"], model)
        self.assertEqual(m.count(), 1)
        self.assertEqual(m.requests[0].path, "/v1/chat/completions")

    def test_streamed_chat_assembles_text_and_ends(self):
        m = self.mock("up", "stream", events=5, interval_ms=100)
        model = "s-" + self.uid("m")
        self.configure([self.api(self.uid("a"), m.url, [model])])
        out = self.sdk("stream", model=model, expectText="tok0 tok1 tok2 tok3 tok4 ")
        # The five content events, the usage event: each reached the SDK as
        # it was sent (100 ms apart), not all at once at the end.
        self.assertEqual(out["chunks"], 6, out)
        self.assertGreater(out["spreadMs"], 300, out)


class O02Embeddings(SdkBase):
    def test_embeddings_base64_default_and_float(self):
        m, model = self.one_endpoint("embeddings")
        self.sdk("embeddings", model=model)
        self.assertEqual([r.path for r in m.requests], ["/v1/embeddings"] * 2)
        self.assertEqual([r.json().get("encoding_format") for r in m.requests],
                         ["base64", "float"])


class O03Models(SdkBase):
    def test_models_list_is_the_gateways(self):
        a, b = self.mock("a"), self.mock("b")
        ma, mb, alias = ("ml-" + self.uid(t) for t in ("a", "b", "alias"))
        self.configure([self.api(self.uid("a"), a.url, [ma], modelMapping={alias: ma}),
                        self.api(self.uid("b"), b.url, [mb])])
        out = self.sdk("models", model=mb)
        self.assertEqual(sorted(out["ids"]), sorted([ma, mb, alias]))
        self.assertEqual(a.count() + b.count(), 0, "the model list went upstream")


class O04Errors(SdkBase):
    def test_wrong_key_is_authentication_error(self):
        m, model = self.one_endpoint()
        out = self.sdk("wrong_key", wrongKey=th.new_key("sk-wrong-"))
        self.assertEqual(out["class"], "AuthenticationError")
        self.assertEqual(m.count(), 0)

    def test_unknown_model_is_not_found_error(self):
        m, model = self.one_endpoint()
        out = self.sdk("unknown_model", model="no-such-" + model)
        self.assertEqual(out["class"], "NotFoundError")
        self.assertEqual(m.count(), 0)

    def test_rate_limit_is_rate_limit_error_with_retry_after(self):
        m, model = self.one_endpoint(rpm=1)
        out = self.sdk("rate_limit", model=model)
        self.assertEqual(out["class"], "RateLimitError")
        ra = int(out["retryAfter"])
        self.assertTrue(1 <= ra <= 60, out)
        self.assertEqual(m.count(), 1, "the 429 was the gateway's own")
        print("# RateLimitError: Retry-After %d s, message %r" % (ra, out["message"]))

    def test_retry_after_of_a_minute_gets_the_sdks_own_backoff(self):
        # The SDK honours a Retry-After only under 60 s; the gateway's for an
        # rpm limit just used up is 60, so the SDK retries after its own
        # backoff (0.5 s less up to 25 % jitter) and gets a second 429.
        m, model = self.one_endpoint(rpm=1)
        out = self.sdk("retry", model=model, prime=True)
        self.assertEqual(out["statuses"], [429, 429], out)
        self.assertEqual(out["error"]["class"], "RateLimitError", out)
        self.assertEqual(out["retryAfter"][0], "60", out)
        self.assertTrue(300 <= out["waitMs"] <= 500 + RETRY_SLACK_MS, out)
        print("# Retry-After %s: the SDK waited %.0f ms (its own backoff)"
              % (out["retryAfter"][0], out["waitMs"]))


class O05RetryAfterHonoured(SdkBase):
    """On the test-clock build: the clock stands 57 s past the limited call,
    so the gateway's Retry-After is 3 s; once that 429 is logged the test
    moves the clock past the window, and the SDK's retry (3 s later in real
    time) passes. (A clock running in real time from the move to 57 s made
    the 429 depend on how fast node started: 3 s later, none.)"""

    gateway_name = "sdk-clock"
    gateway_kwargs = {"binary": harness.TESTCLOCK_BIN, "clock": True}

    @classmethod
    def setUpClass(cls):
        if not os.access(harness.TESTCLOCK_BIN, os.X_OK):
            raise unittest.SkipTest("test-clock build not found: %s (make check builds it)"
                                    % harness.TESTCLOCK_BIN)
        super().setUpClass()

    def test_sdk_waits_the_retry_after_it_read(self):
        m, model = self.one_endpoint(rpm=1)
        self.assertEqual(self.post("/v1/chat/completions", th.chat(model)).status, 200)
        self.gw.advance_clock(57)
        offset = self.gw.log_size()

        def past_the_window():
            self.gw.wait_log(offset, lambda t: "status=429" in t, timeout=60)
            self.gw.advance_clock(3)

        mover = threading.Thread(target=past_the_window, daemon=True)
        mover.start()
        out = self.sdk("retry", model=model)
        mover.join(60)
        self.assertEqual(out["statuses"], [429, 200], out)
        self.assertEqual(out["result"], "hello from up", out)
        ra = int(out["retryAfter"][0])
        self.assertTrue(1 <= ra <= 4, out)
        self.assertTrue(ra * 1000 - 20 <= out["waitMs"] <= ra * 1000 + RETRY_SLACK_MS, out)
        print("# Retry-After %d: the SDK waited %.0f ms before its retry" % (ra, out["waitMs"]))


ORDER = [O01Chat, O02Embeddings, O03Models, O04Errors, O05RetryAfterHonoured]


def main(argv):
    if not NODE:
        print("1..0 # SKIP Node.js not found (node in PATH, or NODE=): "
              "the official OpenAI client needs it")
        return 0
    why = install_sdk()
    if why:
        print("Bail out! cannot install openai@%s: %s"
              % (pinned_version(), why.strip().replace("\n", "\n# ")))
        return 1
    shutil.copyfile(SCRIPT, os.path.join(CACHE, "openai_sdk.mjs"))
    v = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout.strip()
    print("# openai %s (npm), node %s, in %s" % (installed_version(), v, CACHE))
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
