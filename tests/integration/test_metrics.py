#!/usr/bin/env python3
"""Integration tests of GET /metrics (issue 8): the built responder behind a
real web server (lighttpd with 4 responder processes by default), against mock
upstreams on loopback. Known traffic goes through the gateway (successes, a
retried failure, a 429 from an RPM limit, wrong keys, a bad JSON body, an
unknown model, a stream); the web server is restarted, so that /metrics is
scraped from other processes than the traffic's (and from more than one), and
every number must match the traffic sent (the counters are in the store). The text is
checked with `promtool check metrics` (Debian package prometheus); without
promtool that one case is skipped, saying so.

    M01 the key of /v1/status, or none with server.metricsPublic; the format
    M02 the numbers match the traffic, in processes that saw none of it

Prints TAP (the runner of test_http.py). By hand:

    [API_TOGETHER_TEST_STORE=redis] python3 tests/integration/test_metrics.py [-v]
"""

import os
import re
import shutil
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402  (shared Base, TAP printer, keys)
from test_http import CLIENT_KEY, chat, new_key  # noqa: E402

PROCS = 4
# How often each responder folds its refusal counts into the store.
FOLD_S = 1.0
CHAT = "/v1/chat/completions"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset of (label, value)): float} of an exposition; raises
    on a line that is neither a comment nor a sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m is None:
            raise AssertionError("not a sample line: %r" % line)
        labels = frozenset(LABEL_RE.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class MetricsBase(th.Base):
    gateway_name = "metrics"
    gateway_kwargs = {"max_procs": PROCS}

    def scrape(self, key=CLIENT_KEY):
        r = self.get("/metrics", key=key)
        self.assertStatus(r, 200)
        return r


class M01Access(MetricsBase):
    def setUp(self):
        super().setUp()
        self.a = self.mock("a")
        self.configure([self.api(self.uid("a"), self.a.url, ["m"])])

    def test_key_of_v1_status_needed(self):
        r = self.scrape()
        self.assertEqual(r.header("content-type"), CONTENT_TYPE, self.diag(r))
        self.assertError(self.get("/metrics", key=None), 401, "authentication_error",
                         "invalid_api_key")
        self.assertError(self.get("/metrics", key=new_key()), 401, "authentication_error",
                         "invalid_api_key")

    def test_metrics_public_opens_it(self):
        self.configure([self.api(self.uid("a"), self.a.url, ["m"])], metricsPublic=True)
        r = self.get("/metrics", key=None)
        self.assertStatus(r, 200)
        self.assertIn("api_together_attempts_total", r.text())

    def test_other_method_405(self):
        r = self.post("/metrics", body={})
        self.assertStatus(r, 405)
        self.assertIn("GET", r.header("allow") or "")

    def test_promtool_check_metrics(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool not found (Debian package prometheus)")
        self.post(CHAT, body=chat("m"))
        text = self.scrape().text()
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n%s\n--- text:\n%s"
                         % (p.stdout.decode(errors="replace"), text))


class M02Numbers(MetricsBase):
    def test_numbers_match_the_traffic_in_other_processes(self):
        a, f, g = self.mock("a"), self.mock("f"), self.mock("g")
        slow = self.mock("slow", delay=3)
        a.set("auto", usage=(10, 5), stream_usage=(5, 3))
        f.set("status", status=500, body={"error": {"message": "down"}})
        g.set("chat", usage=(1, 2))
        ida, idf, idg = self.uid("a"), self.uid("f"), self.uid("g")
        idslow = self.uid("slow")
        self.configure([self.api(ida, a.url, ["solo"], rpm=3),
                        self.api(idf, f.url, ["pair"], weight=th.FIRST),
                        self.api(idg, g.url, ["pair"], weight=th.LAST),
                        self.api(idslow, slow.url, ["slow"])])
        # Refusals reach the store when their process folds them in (once a
        # second, and when it stops; doc/behaviour.md, Limits and state): a
        # fresh set of responders starts from every earlier one counted.
        self.gw.stop(keep=True)
        self.gw.start()
        before = parse(self.scrape().text())
        rej0 = {k: value(before, "api_together_rejections_total", reason=k) or 0
                for k in ("auth", "bad_input", "rate_limit", "cooldown")}

        # Endpoint a (rpm 3): two answers, a stream, then a 429 of the limit.
        for _ in range(2):
            self.assertStatus(self.post(CHAT, body=chat("solo")), 200)
        s = self.gw.stream("POST", CHAT, body=chat("solo", stream=True), key=CLIENT_KEY)
        self.assertEqual(s.status, 200, s.describe())
        self.assertStatus(self.post(CHAT, body=chat("solo")), 429)
        # f fails (500) and g answers: a request tries f first (FIRST) and
        # is retried on g.
        pair = 0
        while f.count() == 0 and pair < 40:
            self.assertStatus(self.post(CHAT, body=chat("pair")), 200)
            pair += 1
        self.assertGreater(f.count(), 0, "f was never tried first")
        # Refusals: wrong keys, a body that is not JSON, an unknown model.
        self.assertStatus(self.post(CHAT, body=chat("solo"), key=new_key()), 401)
        self.assertStatus(self.get("/v1/models", key=None), 401)
        self.assertStatus(self.get("/metrics", key=new_key()), 401)
        self.assertStatus(self.gw.request("POST", CHAT, body=b"{not json", key=CLIENT_KEY,
                                          headers={"Content-Type": "application/json"}), 400)
        self.assertStatus(self.post(CHAT, body=chat("no-such-model")), 404)

        nf, ng = f.count(), g.count()
        self.assertEqual(ng, pair, "g answers every request of pair")
        expect = {
            ("api_together_attempts_total", ida): 3,
            ("api_together_attempts_total", idf): nf,
            ("api_together_attempts_total", idg): ng,
            ("api_together_retries_total", ida): 0,
            ("api_together_retries_total", idf): 0,
            ("api_together_retries_total", idg): nf,
            ("api_together_upstream_latency_seconds_count", ida): 3,
            ("api_together_upstream_latency_seconds_count", idf): nf,
            ("api_together_upstream_latency_seconds_count", idg): ng,
            ("api_together_stream_ttfb_seconds_count", ida): 1,
            ("api_together_stream_ttfb_seconds_count", idf): 0,
            ("api_together_stream_ttfb_seconds_count", idg): 0,
            ("api_together_rpm_used", ida): 3,
            ("api_together_rpm_limit", ida): 3,
            ("api_together_rpd_used", ida): 3,
            ("api_together_rpd_used", idf): nf,
            ("api_together_cooldown_active", ida): 0,
            ("api_together_cooldown_active", idf): 0,
            ("api_together_cooldown_until_seconds", idf): 0,
            ("api_together_failure_run", idf): nf,
            ("api_together_failure_run", idg): 0,
        }
        classes = {ida: {"2xx": 3}, idf: {"5xx": nf}, idg: {"2xx": ng}}
        tokens = {ida: (25, 13, 38), idf: (0, 0, 0), idg: (ng * 1, ng * 2, ng * 3)}
        rejects = {"auth": 3, "bad_input": 2, "rate_limit": 1, "cooldown": 0}

        # Within the fold's second (plus a scrape), without a restart.
        def rejections():
            m = parse(self.scrape().text())
            return {k: value(m, "api_together_rejections_total", reason=k) or 0
                    for k in rejects}

        want_rej = {k: rej0[k] + n for k, n in rejects.items()}
        self.assertEqual(self.wait_for(lambda: rejections() == want_rej and want_rej,
                                       timeout=FOLD_S + 1.0) or rejections(), want_rej)
        # The scrapes come from other processes than the traffic's: the web
        # server is restarted (its responders with it) first.
        old_pids = set(self.gw.responder_pids())
        self.gw.stop(keep=True)
        self.gw.start()
        self.assertFalse(old_pids & set(self.gw.responder_pids()), "not a fresh set of responders")
        # Every process is scraped on its own FastCGI socket, not where the
        # web server sends a request. mod_fcgid starts processes as requests
        # wait: a slow request holds one while a scrape goes through Apache.
        texts = []

        def keep(text):
            # The slow endpoint's own lines move meanwhile, and so do its
            # client's usage lines (doc/behaviour.md, Limits and state: usage
            # per client), which its answer adds to.
            texts.append("\n".join(x for x in text.splitlines()
                                   if idslow not in x and "api_together_client_" not in x))

        keep(self.scrape().text())
        holder = threading.Thread(target=self.post, args=(CHAT,), kwargs={"body": chat("slow")},
                                  daemon=True)
        holder.start()
        self.assertTrue(self.wait_for(lambda: slow.count() >= 1, timeout=5),
                        "the slow request did not arrive")
        keep(self.scrape().text())
        holder.join(10)
        socks = self.gw.process_sockets()
        for pid in sorted(socks):
            r = harness.fastcgi_request(socks[pid], "GET", self.gw.url_path("/metrics"),
                                        key=CLIENT_KEY)
            self.assertStatus(r, 200)
            keep(r.text())
        if self.gw.server != "proxy_fcgi":
            self.assertGreaterEqual(len(socks), 2, "one responder process: %r" % socks)
        # Every process answers with the same totals (the gauges of time
        # aside, none of which moves within the minute).
        self.assertEqual(len(set(texts)), 1, "scrapes differ")
        m = parse(texts[-1])
        for (name, ep), want in expect.items():
            self.assertEqual(value(m, name, endpoint=ep), want, "%s{endpoint=%s}" % (name, ep))
        self.assertIsNone(value(m, "api_together_rpm_limit", endpoint=idf),
                          "an unlimited endpoint has no limit series")
        for ep, by_class in classes.items():
            for c in ("none", "2xx", "3xx", "4xx", "5xx"):
                self.assertEqual(value(m, "api_together_requests_total", endpoint=ep,
                                       code_class=c), by_class.get(c, 0), "%s %s" % (ep, c))
        for ep, (p, c, t) in tokens.items():
            for kind, want in (("prompt", p), ("completion", c), ("total", t)):
                self.assertEqual(value(m, "api_together_tokens_total", endpoint=ep, kind=kind),
                                 want, "%s %s" % (ep, kind))
        for reason, n in rejects.items():
            self.assertEqual(value(m, "api_together_rejections_total", reason=reason),
                             rej0[reason] + n, reason)
        # Histograms: cumulative, ending at the count, with a sum that fits.
        for ep in (ida, idf, idg):
            for h in ("upstream_latency_seconds", "stream_ttfb_seconds"):
                name = "api_together_%s_bucket" % h
                bs = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                             if k[0] == name and dict(k[1]).get("endpoint") == ep))
                self.assertEqual(len(bs), 13, "%s %s" % (h, ep))
                counts = [v for _, v in bs]
                self.assertEqual(counts, sorted(counts), "%s %s not cumulative" % (h, ep))
                n = value(m, "api_together_%s_count" % h, endpoint=ep)
                self.assertEqual(bs[-1], (float("inf"), n))
                total = value(m, "api_together_%s_sum" % h, endpoint=ep)
                self.assertTrue(0 <= total <= 30 * max(n, 1), "%s sum %s" % (h, total))


ORDER = [M01Access, M02Numbers]


def main(argv):
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
