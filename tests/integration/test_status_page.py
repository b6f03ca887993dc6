#!/usr/bin/env python3
"""Integration tests of GET /status, the status page (issue 8): the page the
responder serves (login form without a key or with a wrong one, the page
with a right ?key=), its headers (CSP, no-store, nosniff, no-referrer, no
cookie), the key kept out of the log, and the page rendered by headless
Chromium (Debian package chromium): each endpoint of the config a card with
its name, its RPD figures, its tokens (today's, and since a reset) and its
last hour's charts (a gateway card's too), read from v1/status by the page's
script. A
screenshot of it is written to tests/integration/status-page.png in the build
tree (docs/status.png is taken by scripts/status-screenshot, the same way, with
an hour of traffic on the test clock).

Behind lighttpd (make check runs it there); API_TOGETHER_TEST_SERVER picks
another server by hand. Prints TAP; the Chromium cases are skipped, with the
reason, when chromium is not installed. Python 3 standard library only:

    python3 tests/integration/test_status_page.py [-v] [Class.test_name ...]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http  # noqa: E402
from mock_upstream import MockUpstream  # noqa: E402
from test_http import CLIENT_KEY, EXTRA_KEY, Base, chat, leaked, new_key  # noqa: E402

CHROMIUM = (os.environ.get("CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser") or "/usr/bin/chromium")
BUILDDIR = os.environ.get("API_TOGETHER_BUILDDIR") or harness.SRCDIR
SCREENSHOT = os.path.join(BUILDDIR, "tests", "integration", "status-page.png")

# The endpoints of the test config, and how many requests each gets before
# the page is looked at: its RPD figure then (each its own model, so every
# request lands on the endpoint named).
ENDPOINTS = [
    {"id": "alpha", "name": "Alpha OpenAI", "model": "m-alpha", "rpm": 60, "rpd": 1000,
     "requests": 3},
    {"id": "beta", "name": "Beta Groq", "model": "m-beta", "rpm": -1, "rpd": 500,
     "requests": 5},
    # A token limit (doc/behaviour.md, Limits and state, Token limits): a TPM
    # bar, its answers' 18 tokens each; the others have none.
    {"id": "gamma", "name": "Gamma local", "model": "m-gamma", "rpm": 30, "rpd": -1,
     "requests": 2, "tpm": 100000},
    # A pool of 3 keys (doc/behaviour.md, Key pools): a row per key; the
    # least recently used key serves, so 4 requests give 2, 1, 1. Its tpd
    # gives each key's row a TPD bar; its modelLimits a box for the model
    # with a bar per limit it sets and a row per key (issue 14 point 6); its
    # day is Los Angeles's.
    {"id": "delta", "name": "Delta pool", "model": "m-delta", "rpm": 10, "rpd": 100,
     "requests": 4, "keys": 3, "tpd": 100000, "dayResetTimezone": "America/Los_Angeles",
     "modelLimits": {"m-delta": {"rpm": 5, "tpd": 1000}}},
]
# Reset (POST /v1/token/reset) after the traffic: its card shows the day's
# tokens, and 0 since the reset.
RESET_ID = "beta"


def chromium_missing():
    """None when headless Chromium can run here, else why not."""
    if os.access(CHROMIUM, os.X_OK):
        return None
    return "chromium not found (Debian package chromium; CHROMIUM=path names another)"


def chromium(url, *args, timeout=90):
    """Runs headless Chromium on url with args; its stdout (text). A profile
    of its own, thrown away after, so no run sees another's sessionStorage."""
    profile = tempfile.mkdtemp(prefix="api-together-chromium-")
    try:
        p = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--user-data-dir=" + profile, "--no-first-run", "--disable-extensions",
             "--window-size=1280,900", "--virtual-time-budget=5000", *args, url],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if p.returncode != 0:
        raise AssertionError("chromium exited with %d: %s" % (
            p.returncode, p.stderr.decode("utf-8", "replace")[-2000:]))
    return p.stdout.decode("utf-8", "replace")


class StatusPageBase(Base):
    """One gateway with the three endpoints of ENDPOINTS on mock upstreams,
    each sent its requests once for the whole class."""

    gateway_name = "status-page"
    mocks_up = []
    gateways_ready = set()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.gateway_name in StatusPageBase.gateways_ready:
            return
        StatusPageBase.gateways_ready.add(cls.gateway_name)
        if not StatusPageBase.mocks_up:
            for e in ENDPOINTS:
                m = MockUpstream(e["id"]).start()
                m.set("chat", usage=(11, 7))
                StatusPageBase.mocks_up.append(m)
        apis = []
        for e, m in zip(ENDPOINTS, StatusPageBase.mocks_up):
            keys = [new_key("sk-up-") for _ in range(e.get("keys", 1))]
            e["apiKeys"] = keys
            apis.append({"id": e["id"], "name": e["name"], "baseUrl": m.url,
                         "apiKey": keys if len(keys) > 1 else keys[0],
                         "models": [e["model"]], "rpm": e["rpm"], "rpd": e["rpd"]})
            for field in ("tpm", "tpd", "dayResetTimezone", "modelLimits"):
                if field in e:
                    apis[-1][field] = e[field]
        cls.gw.write_config({"server": test_http.default_server(), "apis": apis})
        for e in ENDPOINTS:
            for _ in range(e["requests"]):
                r = cls.gw.request("POST", "/v1/chat/completions", body=chat(e["model"]),
                                   key=CLIENT_KEY)
                if r.status != 200:
                    raise AssertionError("traffic for %s: %s" % (e["id"], r))
        r = cls.gw.request("POST", "/v1/token/reset", body={"apiId": RESET_ID}, key=CLIENT_KEY)
        if r.status != 200:
            raise AssertionError("reset of %s: %s" % (RESET_ID, r))

    def page(self, query=None, method="GET"):
        path = "/status" + ("?" + query if query is not None else "")
        return self.gw.request(method, path)

    def url(self, query=None):
        return "http://127.0.0.1:%d%s%s" % (self.gw.port, self.gw.url_path("/status"),
                                            "?" + query if query is not None else "")

    def assertPage(self, r, state, status=200):
        self.assertStatus(r, status)
        self.assertTrue((r.header("content-type") or "").startswith("text/html"),
                        self.diag(r))
        self.assertIn('data-state="%s"' % state, r.text(), self.diag(r))


class S01Served(StatusPageBase):
    """What the responder answers to GET /status (no browser)."""

    def test_login_form_without_key(self):
        r = self.page()
        self.assertPage(r, "login")
        text = r.text()
        self.assertIn('<form id="login"', text)
        # The page itself holds no figures: its script fetches them.
        for e in ENDPOINTS:
            self.assertNotIn(e["name"], text)
            self.assertNotIn(e["id"], text.replace("data-id", ""))

    def test_wrong_key_gives_login_form(self):
        wrong = new_key()
        r = self.page("key=" + wrong)
        self.assertPage(r, "denied")
        self.assertNotIn(wrong, r.text())
        for e in ENDPOINTS:
            self.assertNotIn(e["name"], r.text())

    def test_right_key_gives_the_page(self):
        for key in (CLIENT_KEY, EXTRA_KEY):
            r = self.page("key=" + urllib.parse.quote(key, safe=""))
            self.assertPage(r, "ok")
            self.assertFalse(leaked(r.text(), key), "the key is in the page")
        # Other parameters around it do not matter.
        self.assertPage(self.page("x=1&key=%s&y=2" % CLIENT_KEY), "ok")
        self.assertPage(self.page("monkey=%s" % CLIENT_KEY), "login")

    def test_headers(self):
        for q in (None, "key=" + CLIENT_KEY, "key=" + new_key()):
            r = self.page(q)
            self.assertStatus(r, 200)
            self.assertEqual(r.header_all("set-cookie"), [], self.diag(r))
            self.assertEqual(r.header("cache-control"), "no-store", self.diag(r))
            self.assertEqual(r.header("x-content-type-options"), "nosniff", self.diag(r))
            self.assertEqual(r.header("referrer-policy"), "no-referrer", self.diag(r))
            self.assertIsNone(r.header("access-control-allow-origin"), self.diag(r))
            csp = r.header("content-security-policy") or ""
            m = re.search(r"script-src 'nonce-([0-9a-f]{32})'", csp)
            self.assertIsNotNone(m, "CSP: %r" % csp)
            nonce = m.group(1)
            for part in ("default-src 'none'", "style-src 'nonce-%s'" % nonce,
                         "connect-src 'self'", "form-action 'none'"):
                self.assertIn(part, csp)
            self.assertNotIn("unsafe-inline", csp)
            # Every script and style of the page is its own, inline, with the nonce.
            text = r.text()
            self.assertEqual(re.findall(r"<script[^>]*>", text), ['<script nonce="%s">' % nonce])
            self.assertEqual(re.findall(r"<style[^>]*>", text), ['<style nonce="%s">' % nonce])
            self.assertNotRegex(text, r"(src|href)=\"(https?:)?//")
        # A fresh nonce for each answer.
        self.assertNotEqual(self.page().header("content-security-policy"),
                            self.page().header("content-security-policy"))

    def test_head_and_other_methods(self):
        r = self.page(method="HEAD")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"")
        r = self.gw.request("POST", "/status", body="key=" + CLIENT_KEY,
                            content_type="application/x-www-form-urlencoded")
        self.assertError(r, 405, "invalid_request_error", "method_not_allowed")
        self.assertEqual(r.header("allow"), "GET, HEAD")

    def test_key_not_in_log(self):
        wrong = new_key()
        offset = self.gw.log_size()
        self.assertPage(self.page("key=" + CLIENT_KEY), "ok")
        self.assertPage(self.page("key=" + wrong), "denied")
        self.assertPage(self.page("a=b&key=" + EXTRA_KEY), "ok")
        since = self.gw.wait_log(offset, lambda t: len(re.findall(r"GET /status status=200", t)) >= 3)
        self.assertEqual(len(re.findall(r"GET /status status=200", since)), 3, since)
        text = self.gw.log_text()
        for key in (CLIENT_KEY, wrong, EXTRA_KEY):
            self.assertFalse(leaked(text, key), "a key is in the log:\n" + since)


class S02Browser(StatusPageBase):
    """The page in headless Chromium: its script ran, fetched v1/status with
    the key and drew a card per endpoint."""

    def setUp(self):
        super().setUp()
        missing = chromium_missing()
        if missing:
            self.skipTest(missing)

    def test_cards_show_each_endpoint_and_its_rpd(self):
        dom = chromium(self.url("key=" + CLIENT_KEY), "--dump-dom")
        self.assertIn('data-state="ok"', dom)
        self.assertFalse(leaked(dom, CLIENT_KEY), "the key is in the DOM")
        cards = re.findall(r'<article class="card" data-id="([^"]+)">(.*?)</article>', dom, re.S)
        self.assertEqual([c[0] for c in cards], [e["id"] for e in ENDPOINTS], dom[-3000:])
        for (cid, body), e in zip(cards, ENDPOINTS):
            self.assertIn(">%s<" % e["name"], body)
            m = re.search(r'data-kind="rpd" data-used="(\d+)" data-limit="(-?\d+)"', body)
            self.assertIsNotNone(m, body)
            self.assertEqual((int(m.group(1)), int(m.group(2))), (e["requests"], e["rpd"]), body)
            want = "%d / %s" % (e["requests"],
                                "no limit" if e["rpd"] < 0 else "{:,}".format(e["rpd"]))
            self.assertIn(">%s<" % want, body)
            m = re.search(r'data-kind="tpm" data-used="(\d+)" data-limit="(-?\d+)"', body)
            if "tpm" not in e:
                self.assertIsNone(m, body)
            else:
                self.assertIsNotNone(m, body)
                self.assertEqual((int(m.group(1)), int(m.group(2))),
                                 (18 * e["requests"], e["tpm"]), body)
                self.assertIn(">36 / 100,000<", body)
            # Tokens: usage=(11, 7) per answer; today's, and since the reset
            # (none for RESET_ID, reset after its requests).
            self.assertRegex(body, r'<table class="tokens"><tr><th></th>'
                             r'<th>tokens today</th><th>since reset</th></tr>')
            since = 0 if e["id"] == RESET_ID else e["requests"]
            for kind, per in (("prompt", 11), ("completion", 7), ("total", 18)):
                m = re.search(r'<tr data-tokens="%s"><th>[^<]*</th><td class="today">'
                              r'([^<]*)</td><td class="since-reset">([^<]*)</td></tr>' % kind,
                              body)
                self.assertIsNotNone(m, body)
                self.assertEqual((m.group(1), m.group(2)),
                                 ("{:,}".format(per * e["requests"]), "{:,}".format(per * since)),
                                 "%s %s tokens: %s" % (e["id"], kind, body))
        # The pool's card: a row per key, by its last 4 characters only.
        for e in ENDPOINTS:
            body = dict(cards)[e["id"]]
            rows = re.findall(r'<tr data-key="([^"]+)" data-state="([^"]+)">(.*?)</tr>', body,
                              re.S)
            if e.get("keys", 1) == 1:
                self.assertEqual(rows, [], body)
                continue
            self.assertEqual([(k, st) for k, st, _ in rows],
                             [("\u2026" + k[-4:], "active") for k in e["apiKeys"]], body)
            used = [int(re.search(r'data-kind="rpd" data-used="(\d+)"', r).group(1))
                    for _, _, r in rows]
            self.assertEqual(used, [2, 1, 1], body)
            for k in e["apiKeys"]:
                self.assertFalse(leaked(dom, k), "a key is in the DOM")
        self.assertRegex(dom, r'id="updated"[^>]*>last updated \d\d:\d\d:\d\d<')
        self.assertRegex(dom, r'<form id="login"[^>]* hidden')
        self.assertRegex(dom, r'<div id="banner"[^>]* hidden')

    def test_cards_show_model_limits_token_bars_and_the_day(self):
        # Issue 14 point 6: a bar per limit set, per key and per model of
        # modelLimits; when the endpoint's day rolls over; the answers
        # counted from their estimate where a token limit is.
        status = {a["id"]: a for a in
                  self.gw.request("GET", "/v1/status", key=CLIENT_KEY).json()["apis"]}
        dom = chromium(self.url("key=" + CLIENT_KEY), "--dump-dom")
        cards = dict(re.findall(r'<article class="card" data-id="([^"]+)">(.*?)</article>', dom,
                                re.S))
        self.assertEqual(sorted(cards), sorted(e["id"] for e in ENDPOINTS), dom[-3000:])
        for e in ENDPOINTS:
            body = cards[e["id"]]
            m = re.search(r'<dd data-day-resets="([^"]+)">', body)
            self.assertIsNotNone(m, body)
            self.assertEqual(m.group(1), status[e["id"]]["dayResetsAt"], body)
            m = re.search(r'<dd data-estimated="(\d+)">', body)
            if "tpm" in e or "tpd" in e:
                self.assertIsNotNone(m, body)
                self.assertEqual(m.group(1), "0", body)
            else:
                self.assertIsNone(m, body)
            if "modelLimits" not in e:
                self.assertNotIn('class="model"', body)
        # Los Angeles's midnight is 07:00 or 08:00 UTC.
        self.assertRegex(status["delta"]["dayResetsAt"], r"T0[78]:00:00")
        body = cards["delta"]
        # Each key's row has a TPD bar beside RPM and RPD: 18 tokens an answer.
        rows = re.findall(r'<tr data-key="([^"]+)" data-state="[^"]+">(.*?)</tr>', body, re.S)
        self.assertEqual(len(rows), 3, body)
        self.assertEqual([int(re.search(r'data-kind="tpd" data-used="(\d+)" '
                                        r'data-limit="100000"', r).group(1)) for _, r in rows],
                         [36, 18, 18], body)
        m = re.search(r'<div class="model" data-model="m-delta">(.*?)</table>', body, re.S)
        self.assertIsNotNone(m, body)
        box = m.group(1)
        self.assertIn(">Model m-delta<", box)
        # The model's limits set (rpm 5, tpd 1000), summed over the keys...
        bars = re.findall(r'<div class="meter[^"]*" data-kind="(\w+)" data-used="(\d+)" '
                          r'data-limit="(-?\d+)">', box)
        self.assertEqual(bars[:2], [("rpm", "4", "5"), ("tpd", "72", "1000")], box)
        self.assertNotIn('data-kind="tpm"', box)
        # ...and a row per key.
        krows = re.findall(r'<tr data-key="([^"]+)">(.*?)</tr>', box, re.S)
        self.assertEqual([k for k, _ in krows], ["\u2026" + k[-4:] for k in
                                                 [x for x in ENDPOINTS if x["id"] == "delta"][0]
                                                 ["apiKeys"]], box)
        self.assertEqual([re.findall(r'data-kind="(\w+)" data-used="(\d+)"', r)
                          for _, r in krows],
                         [[("rpm", "2"), ("tpd", "36")], [("rpm", "1"), ("tpd", "18")],
                          [("rpm", "1"), ("tpd", "18")]], box)

    def test_charts_show_the_last_hour(self):
        """Each card and the gateway's draw the last hour (doc/behaviour.md,
        HTTP: /v1/status "history"): an inline SVG of requests by outcome
        and one of tokens, 60 minutes wide, their bars the traffic sent,
        each colour named with its hour's total beside the chart."""
        dom = chromium(self.url("key=" + CLIENT_KEY), "--dump-dom")
        cards = dict(re.findall(r'<article class="card" data-id="([^"]+)">(.*?)</article>',
                                dom, re.S))
        gw = re.search(r'<section id="gateway" class="card gateway">(.*?)</section>', dom, re.S)
        self.assertIsNotNone(gw, "no gateway card: " + dom[-3000:])
        rows = [(e["id"], cards.get(e["id"], ""), e["requests"]) for e in ENDPOINTS]
        rows.append(("gateway", gw.group(1), sum(e["requests"] for e in ENDPOINTS)))

        def bars(chart, kind):
            return [int(v) for v in re.findall(
                r'<rect [^>]*data-kind="%s" data-start="\d+" data-value="(\d+)"' % kind, chart)]

        for cid, body, n in rows:
            charts = dict(re.findall(r'<div class="chart" data-chart="(\w+)">(.*?</svg>)', body,
                                     re.S))
            self.assertEqual(sorted(charts), ["requests", "tokens"], "%s: %s" % (cid, body))
            req, tok = charts["requests"], charts["tokens"]
            self.assertIn("<svg", req)
            self.assertEqual(sum(bars(req, "success")), n, "%s: %s" % (cid, req))
            self.assertEqual(bars(req, "failure") + bars(req, "upstream429"), [], cid)
            self.assertEqual(sum(bars(tok, "tokens")), 18 * n, "%s: %s" % (cid, tok))
            # Each colour named inline with its hour's total; refusals on
            # the gateway's chart only.
            self.assertIn('data-kind="success"><i class="k-success"></i>success %d<' % n, req)
            self.assertIn('>failure 0<', req)
            self.assertIn('>upstream 429 0<', req)
            self.assertEqual('data-kind="refused"' in req, cid == "gateway", cid)
            # 60 minutes, the time axis labelled in local time (HH:MM).
            self.assertEqual(len(re.findall(r"<title>", req)), 60, cid)
            self.assertRegex(req, r'<text [^>]*text-anchor="end"[^>]*>\d\d:\d\d</text>')

    def test_clients_table_shows_the_usage_per_client(self):
        # Usage per client (issue 15 point 5): the class's traffic, all sent
        # with CLIENT_KEY (no name: its last 4 characters), 18 tokens each.
        dom = chromium(self.url("key=" + CLIENT_KEY), "--dump-dom")
        self.assertRegex(dom, r'<section id="clients" class="clients"><h2>Clients</h2>')
        label = CLIENT_KEY[-4:]
        n = sum(e["requests"] for e in ENDPOINTS)
        m = re.search(r'<tr data-client="%s"><td class="client">%s</td>'
                      r'<td class="num">([^<]*)</td><td class="num">([^<]*)</td>'
                      r'<td class="num">([^<]*)</td><td class="num">([^<]*)</td>'
                      r'<td class="models">([^<]*)</td></tr>' % (label, label), dom)
        self.assertIsNotNone(m, dom[-3000:])
        self.assertEqual(m.groups()[:4], (str(n), "{:,}".format(18 * n), str(n),
                                          "{:,}".format(18 * n)))
        self.assertEqual(sorted(m.group(5).split(", ")),
                         sorted("%s %d" % (e["model"], e["requests"]) for e in ENDPOINTS))
        self.assertFalse(leaked(dom, CLIENT_KEY), "the key is in the DOM")

    def test_wrong_key_shows_login_error(self):
        dom = chromium(self.url("key=" + new_key()), "--dump-dom")
        self.assertIn('data-state="denied"', dom)
        self.assertRegex(dom, r'<p id="login-error" class="error" role="alert">That key is not')
        self.assertNotRegex(dom, r'<form id="login"[^>]* hidden')
        self.assertNotIn('<article class="card"', dom)

    def test_without_key_shows_login_form(self):
        dom = chromium(self.url(), "--dump-dom")
        self.assertNotRegex(dom, r'<form id="login"[^>]* hidden')
        self.assertRegex(dom, r'<p id="login-error"[^>]* hidden')
        self.assertNotIn('<article class="card"', dom)

    def test_screenshot(self):
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        if os.path.exists(SCREENSHOT):
            os.unlink(SCREENSHOT)
        chromium(self.url("key=" + CLIENT_KEY), "--screenshot=" + SCREENSHOT,
                 "--hide-scrollbars")
        with open(SCREENSHOT, "rb") as f:
            head = f.read(8)
        self.assertEqual(head, b"\x89PNG\r\n\x1a\n", SCREENSHOT)
        self.assertGreater(os.path.getsize(SCREENSHOT), 10000)
        print("# screenshot: %s" % SCREENSHOT)


class S03Mount(StatusPageBase):
    """The page below a mount point (/llm/status) fetches /llm/v1/status."""

    gateway_name = "status-page-mount"
    gateway_kwargs = {"mount": "/llm/"}

    def test_page_below_mount(self):
        r = self.page("key=" + CLIENT_KEY)
        self.assertEqual(r.path, "/llm/status?key=" + CLIENT_KEY)
        self.assertPage(r, "ok")
        r = self.gw.request("GET", "/status", absolute=True)
        self.assertStatus(r, 404)

    def test_cards_below_mount(self):
        missing = chromium_missing()
        if missing:
            self.skipTest(missing)
        dom = chromium(self.url("key=" + CLIENT_KEY), "--dump-dom")
        ids = re.findall(r'<article class="card" data-id="([^"]+)">', dom)
        self.assertEqual(ids, [e["id"] for e in ENDPOINTS], dom[-3000:])


def iso_ms(ms):
    """ms since the epoch as the gateway writes times (ISO 8601 UTC, ms)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


class S04ConfigInForce(Base):
    """The config in force, and a rejected edit of it (issue 17 point 4;
    doc/behaviour.md, Configuration: Reload): v1/status's "config" and the
    page's banner, while /health stays 200 and the last good config serves."""

    gateway_name = "status-page-config"

    def setUp(self):
        super().setUp()
        self.up = self.mock("cfg")
        self.good = {"server": test_http.default_server(), "apis": [
            self.api("cfg-a", self.up.url, ["m-cfg"], rpm=60),
            self.api("cfg-b", self.up.url, ["m-cfg"], rpd=100)]}
        self.gw.write_config(self.good)

    def config_seen_by_every_process(self):
        """v1/status's "config" from each responder process, asked on its own
        socket: each looks at the file by itself."""
        seen = []
        for sock in self.gw.process_sockets().values():
            r = harness.fastcgi_request(sock, "GET", self.gw.url_path("/v1/status"),
                                        key=CLIENT_KEY)
            self.assertStatus(r, 200)
            seen.append(r.json()["config"])
            r = harness.fastcgi_request(sock, "GET", self.gw.url_path("/health"))
            self.assertStatus(r, 200)
        self.assertTrue(seen, "no responder process found")
        return seen

    def reject(self):
        """Writes an edit whose second endpoint has rpm -7 and rpd -9; the
        file's mtime in ms."""
        bad = json.loads(json.dumps(self.good))
        bad["apis"][1]["rpm"] = -7
        bad["apis"][1]["rpd"] = -9
        self.gw.write_config(raw=json.dumps(bad, indent=2))
        return os.stat(self.gw.config_path).st_mtime_ns // 1000000

    def test_rejected_edit_in_status_and_health_stays_200(self):
        for c in self.config_seen_by_every_process():
            self.assertEqual(c["path"], self.gw.config_path)
            self.assertRegex(c["loadedAt"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIsNone(c["rejected"])
        mtime = self.reject()
        for c in self.config_seen_by_every_process():
            self.assertEqual(c["path"], self.gw.config_path)
            self.assertIsNotNone(c["loadedAt"])
            self.assertEqual(c["rejected"], {"at": "apis[1].rpm",
                                             "message": "expected an integer >= -1",
                                             "errors": 2, "since": iso_ms(mtime)})
        # The last good config serves: its endpoints, its limits.
        r = self.gw.request("GET", "/v1/status", key=CLIENT_KEY)
        self.assertEqual([(a["id"], a["limits"]["rpm"]) for a in r.json()["apis"]],
                         [("cfg-a", 60), ("cfg-b", -1)], self.diag(r))
        self.assertStatus(self.post("/v1/chat/completions", chat("m-cfg")), 200)
        # A syntax error: its line and column.
        self.gw.write_config(raw='{"server": {"apiKey": "x"},\n "apis": [ {"id": ')
        for c in self.config_seen_by_every_process():
            self.assertRegex(c["rejected"]["at"], r"^line 2, column \d+$")
        # A good file again: the rejection goes.
        self.gw.write_config(self.good)
        for c in self.config_seen_by_every_process():
            self.assertIsNone(c["rejected"])

    def test_rejected_edit_shows_a_banner_on_the_page(self):
        missing = chromium_missing()
        if missing:
            self.skipTest(missing)
        url = "http://127.0.0.1:%d%s?key=%s" % (self.gw.port, self.gw.url_path("/status"),
                                               CLIENT_KEY)
        dom = chromium(url, "--dump-dom")
        self.assertRegex(dom, r'<div id="config-banner"[^>]* hidden')
        self.assertRegex(dom, r'<p id="config" class="note config">Config <code>%s</code>, '
                         r'loaded \d\d:\d\d:\d\d</p>' % re.escape(self.gw.config_path))
        self.reject()
        self.assertStatus(self.gw.request("GET", "/health"), 200)
        dom = chromium(url, "--dump-dom")
        m = re.search(r'<div id="config-banner" class="banner config" role="alert" '
                      r'data-at="([^"]*)" data-since="([^"]*)">(.*?)</div>', dom, re.S)
        self.assertIsNotNone(m, dom[-3000:])
        self.assertEqual(m.group(1), "apis[1].rpm")
        text = re.sub(r"<[^>]+>", "", m.group(3))
        self.assertRegex(text, r"^The config file on disk is rejected since \d\d:\d\d:\d\d: "
                         r"apis\[1\]\.rpm: expected an integer &gt;= -1 \(and 1 more error\)\. "
                         r"The configuration loaded at \d\d:\d\d:\d\d stays in service; "
                         r"api-together --check-config %s lists every problem\.$"
                         % re.escape(self.gw.config_path))
        # The cards still show the config in force.
        self.assertEqual(re.findall(r'<article class="card" data-id="([^"]+)">', dom),
                         ["cfg-a", "cfg-b"])
        self.gw.write_config(self.good)
        dom = chromium(url, "--dump-dom")
        self.assertRegex(dom, r'<div id="config-banner"[^>]* hidden')


def stop_mocks():
    for m in StatusPageBase.mocks_up:
        m.stop()


ORDER = [S01Served, S02Browser, S03Mount, S04ConfigInForce]


def main(argv):
    try:
        return test_http.run_tap(argv, sys.modules[__name__], ORDER)
    finally:
        stop_mocks()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
