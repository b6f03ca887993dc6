#!/usr/bin/env python3
"""Integration tests of the operator's actions (issue 17 point 3; doc/behaviour.md,
HTTP: admin actions, and Limits and state, rule 31): POST
/v1/admin/endpoints/ID[/keys/N]/{pause,resume,cooldown/end,recheck,tokens/reset}
for admin keys only, behind lighttpd with 4 responder processes, on mock
upstreams.

    A01 every admin path: 403 admin_only for a client key, 401 without one,
        405 for another method, 404 for an unknown action, endpoint or key
    A02 pause and resume an endpoint: its traffic goes to the other endpoint
        and comes back; the state as every process sees it; with every
        endpoint paused 503 no_available_api, Retry-After 60; the log line
        names the admin, never the key
    A03 pause and resume a key of a pool
    A04 end a cooldown: the endpoint's (after failures) and a key's (after a
        429): served at once
    A05 recheck a rejected key now: the next request rechecks it
    A06 reset tokens of an endpoint
    A07 a pause survives a restart of the server and its responders (and
        --status shows it meanwhile)
    A08 the status page in headless Chromium: click, accept the confirm, the
        card changes without a reload, and /v1/status says so

API_TOGETHER_TEST_STORE picks the store as for test_state.py: gdbm (default)
or redis; test_admin_redis.py only sets it. Chromium is driven over its
DevTools pipe (--remote-debugging-pipe), so a click's window.confirm can be
accepted; without chromium A08 is skipped. Prints TAP; Python 3 standard
library only:

    [API_TOGETHER_TEST_STORE=redis] python3 tests/integration/test_admin.py [-v] [A02Pause...]
"""

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402
import test_state as ts  # noqa: E402
from harness import Gateway  # noqa: E402
from test_http import CLIENT_KEY, chat, default_server, leaked, new_key  # noqa: E402
from test_status_page import CHROMIUM, chromium_missing  # noqa: E402

PROCS = ts.PROCS
CHAT = "/v1/chat/completions"
ADMIN_KEY = new_key("sk-admin-")
ADMIN_NAME = "ops-alice"
# An admin key without a name: the log shows its last 4 characters.
ADMIN_KEY2 = new_key("sk-admin-")
ACTIONS = ("pause", "resume", "cooldown/end", "recheck", "tokens/reset")


def admin_server(**over):
    s = default_server(adminKeys=[{"key": ADMIN_KEY, "name": ADMIN_NAME}, ADMIN_KEY2])
    s.update(over)
    return s


class AdminBase(ts.StateBase):
    gateway_name = "admin-procs4"

    def configure(self, apis, **server):
        self.gw.write_config({"server": admin_server(**server), "apis": apis})

    def act(self, path, key=ADMIN_KEY, method="POST"):
        # An empty body, as curl -d '' sends it: lighttpd answers a POST
        # without Content-Length 411 itself.
        return self.gw.request(method, "/v1/admin/endpoints/" + path, body=b"", key=key)

    def acted(self, path):
        """The action's answer (200, JSON), asserted."""
        r = self.act(path)
        self.assertStatus(r, 200)
        return r.json()

    def status_entry(self, api_id, gw=None):
        gw = gw or self.gw
        r = gw.request("GET", "/v1/status", key=ADMIN_KEY)
        self.assertStatus(r, 200)
        for a in r.json().get("apis", []):
            if a.get("id") == api_id:
                return a
        self.fail("endpoint %s not in /v1/status: %s" % (api_id, r))

    def seen_by_every_process(self, api_id):
        """The endpoint as each responder process's /v1/status shows it (a
        FastCGI request straight to each), asserted to be one and the same."""
        seen = []
        for pid, sock in sorted(self.process_sockets().items()):
            r = harness.fastcgi_request(sock, "GET", self.gw.url_path("/v1/status"),
                                        key=ADMIN_KEY)
            self.assertStatus(r, 200)
            a = [x for x in r.json()["apis"] if x["id"] == api_id]
            self.assertEqual(len(a), 1, r.json())
            seen.append((pid, a[0]))
        def view(x):
            return (x.get("paused"), x.get("available"), x.get("temporarilyDisabled"),
                    [(k["state"], k["paused"]) for k in x["keys"]])
        for pid, a in seen[1:]:
            self.assertEqual(view(a), view(seen[0][1]), "process %d and %d differ"
                             % (seen[0][0], pid))
        return seen[0][1]

    def admin_log(self, action, api_id, key=None):
        """The log line of an action, once written; asserted to name the
        admin and to hold no admin key."""
        want = "admin action=%s endpoint=%s%s by=%s" % (
            action, api_id, "" if key is None else " key=%d" % key, ADMIN_NAME)
        lines = self.log_lines(want=lambda l: want in l)
        self.assertTrue(any(want in l for l in lines), "no log line %r in:\n%s"
                        % (want, "\n".join(lines[-10:])))
        text = "\n".join(lines)
        self.assertFalse(leaked(text, ADMIN_KEY), "the admin key is in the log")
        self.assertFalse(leaked(text, ADMIN_KEY2), "an admin key is in the log")


class A01Refusals(AdminBase):
    def test_client_key_and_methods_and_unknown_paths(self):
        up = self.mock("ref")
        aid = self.uid("ref")
        api = self.api(aid, up.url, ["m-ref"], apiKey=[new_key("sk-p-"), new_key("sk-p-")])
        self.configure([api])
        paths = []
        for action in ACTIONS:
            paths += [aid + "/" + action, aid + "/keys/1/" + action]
        for p in paths + ["nope/pause", aid + "/keys/7/pause", aid + "/fly"]:
            self.assertError(self.act(p, key=CLIENT_KEY), 403, "permission_error", "admin_only")
            self.assertError(self.act(p, key=th.EXTRA_KEY), 403, "permission_error",
                             "admin_only")
            self.assertError(self.act(p, key=None), 401, "authentication_error",
                             "invalid_api_key")
            for method in ("GET", "PUT", "DELETE"):
                r = self.act(p, method=method)
                self.assertError(r, 405, "invalid_request_error", "method_not_allowed")
                self.assertEqual(r.header("allow"), "POST", r.describe())
        self.assertError(self.act("nope/pause"), 404, "invalid_request_error", "api_not_found")
        self.assertError(self.act(aid + "/keys/2/pause"), 404, "invalid_request_error",
                         "not_found")
        self.assertError(self.act(aid + "/keys/01/pause"), 404, "invalid_request_error",
                         "not_found")
        self.assertError(self.act(aid + "/fly"), 404, "invalid_request_error", "not_found")
        self.assertError(self.act(aid), 404, "invalid_request_error", "not_found")
        # nothing of it changed the state or reached the upstream
        st = self.status_entry(aid)
        self.assertIs(st["paused"], False, st)
        self.assertEqual(up.count(), 0)
        # the status endpoints are the admins' too
        self.assertError(self.get("/v1/status"), 403, "permission_error", "admin_only")


class A02PauseEndpoint(AdminBase):
    def test_pause_moves_traffic_and_resume_brings_it_back(self):
        first, second = self.mock("p-first"), self.mock("p-second")
        a, b = self.uid("first"), self.uid("second")
        self.configure([self.api(a, first.url, ["m-p"], weight=th.FIRST),
                        self.api(b, second.url, ["m-p"], weight=th.LAST)])
        self.assertCounts(ts.statuses(self.burst(4, "m-p")), {200: 4}, "before")
        self.assertEqual((first.count(), second.count()), (4, 0))

        got = self.acted(a + "/pause")
        self.assertEqual(got["id"], a, got)
        self.assertIs(got["paused"], True, got)
        self.assertIs(got["available"], False, got)
        self.assertEqual([(k["state"], k["paused"], k["reason"]) for k in got["keys"]],
                         [("paused", False, "paused by an operator")], got)
        self.admin_log("pause", a)
        st = self.seen_by_every_process(a)
        self.assertIs(st["paused"], True, st)
        self.assertIs(self.status_entry(b)["paused"], False)
        # the config's enabled is another thing
        self.assertIs(st["enabled"], True, st)

        self.assertCounts(ts.statuses(self.burst(8, "m-p")), {200: 8}, "paused")
        self.assertEqual((first.count(), second.count()), (4, 8))

        # with every endpoint of the model paused: 503, Retry-After 60
        self.acted(b + "/pause")
        r = self.chat_post("m-p")
        err = self.assertError(r, 503, "service_unavailable", "no_available_api")
        self.assertIn("paused by an operator", err["message"])
        self.assertRetryAfter(r, 60, 60)
        self.assertEqual((first.count(), second.count()), (4, 8))

        got = self.acted(a + "/resume")
        self.assertIs(got["paused"], False, got)
        self.assertIs(got["available"], True, got)
        self.assertEqual([(k["state"], k["paused"]) for k in got["keys"]], [("active", False)])
        self.admin_log("resume", a)
        self.assertIs(self.seen_by_every_process(a)["paused"], False)
        self.assertCounts(ts.statuses(self.burst(4, "m-p")), {200: 4}, "resumed")
        self.assertEqual((first.count(), second.count()), (8, 8))

    def test_an_admin_without_a_name_is_logged_by_its_last_4(self):
        up = self.mock("p-tail")
        a = self.uid("tail")
        self.configure([self.api(a, up.url, ["m-tail"])])
        r = self.act(a + "/pause", key=ADMIN_KEY2)
        self.assertStatus(r, 200)
        want = "admin action=pause endpoint=%s by=%s" % (a, ADMIN_KEY2[-4:])
        lines = self.log_lines(want=lambda l: want in l)
        self.assertTrue(any(want in l for l in lines), "\n".join(lines[-10:]))
        self.assertFalse(leaked("\n".join(lines), ADMIN_KEY2))
        self.acted(a + "/resume")


class A03PauseKey(AdminBase):
    def test_a_paused_key_gets_nothing_until_resumed(self):
        up = self.mock("pk")
        keys = [new_key("sk-pool-") for _ in range(2)]
        a = self.uid("pk")
        self.configure([self.api(a, up.url, ["m-pk"], apiKey=keys)])
        got = self.acted(a + "/keys/0/pause")
        self.assertEqual((got["key"], got["state"], got["paused"]),
                         ("\u2026" + keys[0][-4:], "paused", True), got)
        self.admin_log("pause", a, key=0)
        st = self.seen_by_every_process(a)
        self.assertEqual([(k["state"], k["paused"]) for k in st["keys"]],
                         [("paused", True), ("active", False)], st)
        self.assertIs(st["paused"], False, st)
        self.assertIs(st["available"], True, st)
        # /metrics shows it too: the key's state series says paused.
        r = self.gw.request("GET", "/metrics", key=ADMIN_KEY)
        self.assertStatus(r, 200)
        states = dict(re.findall(r'^api_together_key_state\{endpoint="%s",key="\u2026([^"]{4})",'
                                 r'state="paused"\} (\d)$' % re.escape(a),
                                 r.body.decode(), re.M))
        self.assertEqual(states, {keys[0][-4:]: "1", keys[1][-4:]: "0"}, r.body[-2000:])
        self.assertCounts(ts.statuses(self.burst(6, "m-pk")), {200: 6}, "one key paused")
        self.assertEqual(up.keys(), [keys[1]] * 6)
        # the endpoint's pause and the key's are apart
        self.acted(a + "/pause")
        self.acted(a + "/resume")
        self.assertEqual([k["state"] for k in self.status_entry(a)["keys"]],
                         ["paused", "active"])
        got = self.acted(a + "/keys/0/resume")
        self.assertEqual((got["state"], got["paused"]), ("active", False), got)
        self.assertStatus(self.chat_post("m-pk"), 200)
        self.assertEqual(up.keys()[-1], keys[0], "the resumed key (least recently used)")


class A04EndCooldown(AdminBase):
    def test_endpoint_cooldown_ended_serves_at_once(self):
        up = self.mock("cd", "status", status=500, body={"error": {"message": "down"}})
        a = self.uid("cd")
        self.configure([self.api(a, up.url, ["m-cd"])],
                       cooldown={"failures": 1, "seconds": 600})
        self.assertStatus(self.chat_post("m-cd"), 500)
        self.assertError(self.chat_post("m-cd"), 503, "service_unavailable", "no_available_api")
        self.assertIs(self.status_entry(a)["temporarilyDisabled"], True)
        up.set("chat")
        got = self.acted(a + "/cooldown/end")
        self.assertIs(got["temporarilyDisabled"], False, got)
        self.assertEqual(got["errorCount"], 0, got)
        self.assertNotIn("cooldownUntil", got)
        self.admin_log("cooldown/end", a)
        self.assertIs(self.seen_by_every_process(a)["temporarilyDisabled"], False)
        n = up.count()
        self.assertStatus(self.chat_post("m-cd"), 200)
        self.assertEqual(up.count(), n + 1)

    def test_key_cooldown_ended_serves_at_once(self):
        up = self.mock("kcd")
        keys = [new_key("sk-pool-") for _ in range(2)]
        a = self.uid("kcd")
        self.configure([self.api(a, up.url, ["m-kcd"], apiKey=keys)])
        up.set_key(keys[0], "status", status=429, body={"error": {"message": "slow"}},
                   headers={"Retry-After": "600"})
        self.assertStatus(self.chat_post("m-kcd"), 200)
        self.assertEqual(up.keys(), keys)
        self.assertEqual(self.status_entry(a)["keys"][0]["state"], "cooling")
        up.set_key(keys[0], None)
        got = self.acted(a + "/keys/0/cooldown/end")
        self.assertEqual((got["state"], got["until"]), ("active", None), got)
        self.admin_log("cooldown/end", a, key=0)
        self.assertEqual([k["state"] for k in self.seen_by_every_process(a)["keys"]],
                         ["active", "active"])
        self.assertStatus(self.chat_post("m-kcd"), 200)
        self.assertEqual(up.keys()[-1], keys[0], "the key whose cooldown ended")


class A05Recheck(AdminBase):
    def test_the_next_request_rechecks_the_rejected_key(self):
        up = self.mock("rc")
        keys = [new_key("sk-pool-") for _ in range(2)]
        a = self.uid("rc")
        self.configure([self.api(a, up.url, ["m-rc"], apiKey=keys)], recheckMinutes=60)
        up.set_key(keys[0], "status", status=401, body={"error": {"message": "bad key"}})
        self.assertStatus(self.chat_post("m-rc"), 200)
        self.assertEqual(self.status_entry(a)["keys"][0]["state"], "rejected")
        # ending a cooldown leaves a rejected key rejected
        self.acted(a + "/cooldown/end")
        self.assertEqual(self.status_entry(a)["keys"][0]["state"], "rejected")
        self.assertCounts(ts.statuses(self.burst(3, "m-rc")), {200: 3}, "the other key")
        self.assertNotIn(keys[0], up.keys()[2:])
        up.set_key(keys[0], None)
        got = self.acted(a + "/keys/0/recheck")
        self.assertEqual(got["state"], "rejected", got)
        self.admin_log("recheck", a, key=0)
        n = up.count()
        self.assertStatus(self.chat_post("m-rc"), 200)
        rechecks = [r for r in up.requests[n:] if r.method == "GET"]
        self.assertEqual([(r.path, r.key) for r in rechecks], [("/v1/models", keys[0])])
        self.assertEqual([k["state"] for k in self.seen_by_every_process(a)["keys"]],
                         ["active", "active"])


class A06ResetTokens(AdminBase):
    def test_tokens_reset_keeps_the_day(self):
        up = self.mock("tok", usage=(11, 7))
        a = self.uid("tok")
        self.configure([self.api(a, up.url, ["m-tok"])])
        self.assertCounts(ts.statuses(self.burst(3, "m-tok")), {200: 3}, "traffic")
        self.assertTrue(self.wait_for(lambda: self.status_entry(a)["tokens"]["total"] == 54))
        got = self.acted(a + "/tokens/reset")
        self.assertEqual(got["tokens"], {"prompt": 0, "completion": 0, "total": 0}, got)
        self.assertEqual(got["tokensToday"]["total"], 54, got)
        self.admin_log("tokens/reset", a)
        # /v1/token/reset stays
        r = self.post("/v1/token/reset", {"apiId": a}, key=ADMIN_KEY)
        self.assertStatus(r, 200)


class A07Restart(ts.OwnGatewayBase, AdminBase):
    def test_a_pause_survives_a_restart(self):
        first, second = self.mock("rs-first"), self.mock("rs-second")
        a, b = "adm-rs-first", "adm-rs-second"
        keys = [new_key("sk-pool-") for _ in range(2)]
        gw = self.start_gateway([self.api(a, first.url, ["m-rs"], weight=th.FIRST),
                                 self.api(b, second.url, ["m-rs"], weight=th.LAST,
                                          apiKey=keys)],
                                "admin-restart", adminKeys=[{"key": ADMIN_KEY,
                                                             "name": ADMIN_NAME}])
        self.acted(a + "/pause")
        self.acted(b + "/keys/1/pause")
        gw.stop(keep=True)
        # --status, the server stopped, says so too
        cli = ts.cli_status(gw)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        self.assertEqual(ts.cli_row(cli.stdout, a)[1], "paused", cli.stdout)
        self.assertEqual(ts.cli_row(cli.stdout, b)[1], "yes", cli.stdout)
        self.assertEqual([line.split()[2] for line in cli.stdout.splitlines()
                          if line.startswith("  key ")], ["active", "paused"], cli.stdout)
        gw.start()
        st = self.status_entry(a)
        self.assertIs(st["paused"], True, st)
        self.assertEqual([k["state"] for k in self.status_entry(b)["keys"]],
                         ["active", "paused"])
        self.assertCounts(ts.statuses(self.burst(4, "m-rs")), {200: 4}, "after restart")
        self.assertEqual(first.count(), 0)
        self.assertEqual(second.keys(), [keys[0]] * 4)


def cdp_pipe_browser():
    """Headless Chromium with its DevTools protocol on a pipe (fd 3 in, 4
    out): (process, write fd, read fd, profile dir)."""
    profile = tempfile.mkdtemp(prefix="api-together-chromium-")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def fds():
        # Out of the way first, so that neither dup2 closes the other's.
        a, b = os.dup(to_child_r), os.dup(from_child_w)
        a2, b2 = os.dup2(a, 100), os.dup2(b, 101)
        os.dup2(a2, 3)
        os.dup2(b2, 4)

    p = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--user-data-dir=" + profile, "--no-first-run", "--disable-extensions",
         "--window-size=1280,900", "--remote-debugging-pipe", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=fds, pass_fds=(3, 4))
    os.close(to_child_r)
    os.close(from_child_w)
    return p, to_child_w, from_child_r, profile


class Cdp:
    """The few DevTools calls the page test needs: open a tab, run script in
    it, accept each window.confirm (its text noted in self.dialogs)."""

    def __init__(self):
        self.proc, self.w, self.r, self.profile = cdp_pipe_browser()
        self.buf = b""
        self.n = 0
        self.session = None
        self.dialogs = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")

    def close(self):
        try:
            os.close(self.w)
            os.close(self.r)
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method, params=None):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params or {}}
        if self.session is not None and not method.startswith("Target."):
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.w, data):]
        return self.n

    def message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise AssertionError("chromium did not answer in time")
            chunk = os.read(self.r, 65536)
            if not chunk:
                raise AssertionError("chromium closed its pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, params=None, timeout=30):
        want = self.send(method, params)
        deadline = time.monotonic() + timeout
        while True:
            m = self.message(deadline)
            if m.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(m["params"].get("message"))
                self.send("Page.handleJavaScriptDialog", {"accept": True})
            elif m.get("id") == want:
                if "error" in m:
                    raise AssertionError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expr)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.1)


class A08Page(AdminBase):
    def setUp(self):
        super().setUp()
        missing = chromium_missing()
        if missing:
            self.skipTest(missing)

    def card(self, aid):
        return "document.querySelector('article.card[data-id=\"%s\"]')" % aid

    def test_buttons_confirm_act_and_show_the_new_state(self):
        up = self.mock("pg")
        keys = [new_key("sk-pool-") for _ in range(2)]
        a, b = self.uid("pg-one"), self.uid("pg-pool")
        self.configure([self.api(a, up.url, ["m-pg1"]),
                        self.api(b, up.url, ["m-pg2"], apiKey=keys)])
        url = "http://127.0.0.1:%d%s?key=%s" % (self.gw.port, self.gw.url_path("/status"),
                                               ADMIN_KEY)
        cdp = Cdp()
        try:
            cdp.call("Page.navigate", {"url": url})
            self.assertTrue(cdp.wait(self.card(a) + " !== null"), "no card for %s" % a)
            self.assertFalse(cdp.eval("location.href").count(ADMIN_KEY))
            card = self.card(a)
            self.assertEqual(cdp.eval(card + ".querySelector('.badges').textContent"),
                             "available")
            # click Pause, the confirm is accepted, the card shows it
            cdp.eval(card + ".querySelector('button[data-action=\"pause\"]').click()")
            self.assertEqual(cdp.dialogs, ["Take endpoint %s out of rotation until it is "
                                           "resumed?" % a])
            self.assertTrue(cdp.wait(card + " && " + card + ".querySelector('.badges')"
                                     ".textContent === 'paused by an operator'"),
                            cdp.eval(card + ".outerHTML"))
            self.assertTrue(cdp.wait(card + ".querySelector('button[data-action=\"resume\"]')"
                                     " !== null"))
            self.assertIs(self.seen_by_every_process(a)["paused"], True)
            self.admin_log("pause", a)
            # the page was not loaded again: the same document
            self.assertEqual(cdp.eval("performance.getEntriesByType('navigation').length"), 1)
            # a key of the pool: its row's Pause
            row = (self.card(b) + ".querySelectorAll('table.keys tr[data-key]')[1]")
            cdp.eval(row + ".querySelector('button[data-action=\"pause\"]').click()")
            self.assertEqual(cdp.dialogs[-1], "Take key \u2026%s out of rotation until it is "
                             "resumed?" % keys[1][-4:])
            self.assertTrue(cdp.wait(row + " && " + row + ".getAttribute('data-state') === "
                                     "'paused'"), cdp.eval(self.card(b) + ".outerHTML"))
            self.assertEqual(cdp.eval(row + ".querySelector('.badge').textContent"),
                             "paused by an operator")
            self.assertEqual([(k["state"], k["paused"])
                              for k in self.seen_by_every_process(b)["keys"]],
                             [("active", False), ("paused", True)])
            # and Resume brings the endpoint back
            cdp.eval(card + ".querySelector('button[data-action=\"resume\"]').click()")
            self.assertTrue(cdp.wait(card + " && " + card + ".querySelector('.badges')"
                                     ".textContent === 'available'"))
            self.assertIs(self.status_entry(a)["paused"], False)
            self.assertEqual(len(cdp.dialogs), 3)
            self.assertFalse(leaked(cdp.eval("document.documentElement.outerHTML"),
                                    ADMIN_KEY), "the key is in the DOM")
        finally:
            cdp.close()


    def test_cooldown_recheck_and_tokens_buttons(self):
        # The other three actions through the page: End cooldown on a
        # cooling endpoint, Recheck on a rejected key of a pool, Reset tokens;
        # each confirmed, each seen on the card without a reload and in
        # /v1/status of every process.
        down = self.mock("pgcd", "status", status=500, body={"error": {"message": "down"}})
        up = self.mock("pgok", usage=(11, 7))
        keys = [new_key("sk-pool-") for _ in range(2)]
        c, p = self.uid("pg-cool"), self.uid("pg-rej")
        self.configure([self.api(c, down.url, ["m-pgc"]),
                        self.api(p, up.url, ["m-pgp"], apiKey=keys)],
                       cooldown={"failures": 1, "seconds": 600}, recheckMinutes=60)
        self.assertStatus(self.chat_post("m-pgc"), 500)
        self.assertIs(self.status_entry(c)["temporarilyDisabled"], True)
        up.set_key(keys[0], "status", status=401, body={"error": {"message": "bad key"}})
        self.assertStatus(self.chat_post("m-pgp"), 200)
        self.assertEqual(self.status_entry(p)["keys"][0]["state"], "rejected")
        self.assertTrue(self.wait_for(lambda: self.status_entry(p)["tokens"]["total"] == 18))
        url = "http://127.0.0.1:%d%s?key=%s" % (self.gw.port, self.gw.url_path("/status"),
                                               ADMIN_KEY)
        cdp = Cdp()
        try:
            cdp.call("Page.navigate", {"url": url})
            card, pool = self.card(c), self.card(p)
            self.assertTrue(cdp.wait(card + " !== null && " + pool + " !== null"),
                            "no cards")
            button = card + ".querySelector('button[data-action=\"cooldown-end\"]')"
            self.assertTrue(cdp.wait(button + " !== null"), cdp.eval(card + ".outerHTML"))
            down.set("chat")
            cdp.eval(button + ".click()")
            self.assertEqual(cdp.dialogs[-1], "End the cooldown of endpoint %s now?" % c)
            self.assertTrue(cdp.wait(self.card(c) + ".querySelector('button[data-action="
                                     "\"cooldown-end\"]') === null"),
                            cdp.eval(self.card(c) + ".outerHTML"))
            self.assertIs(self.seen_by_every_process(c)["temporarilyDisabled"], False)
            self.admin_log("cooldown/end", c)
            self.assertStatus(self.chat_post("m-pgc"), 200)
            # Recheck on the rejected key's row: the next request rechecks it.
            row = pool + ".querySelectorAll('table.keys tr[data-key]')[0]"
            self.assertEqual(cdp.eval(row + ".getAttribute('data-state')"), "rejected")
            up.set_key(keys[0], None)
            cdp.eval(row + ".querySelector('button[data-action=\"recheck\"]').click()")
            self.assertEqual(cdp.dialogs[-1], "Recheck key \u2026%s with the next request?"
                             % keys[0][-4:])
            self.admin_log("recheck", p, key=0)  # once logged, the action is done
            n = up.count()
            self.assertStatus(self.chat_post("m-pgp"), 200)
            self.assertEqual([(r.path, r.key) for r in up.requests[n:] if r.method == "GET"],
                             [("/v1/models", keys[0])])
            self.assertEqual([k["state"] for k in self.seen_by_every_process(p)["keys"]],
                             ["active", "active"])
            self.assertTrue(cdp.wait(self.card(p) + ".querySelectorAll('table.keys "
                                     "tr[data-key]')[0].getAttribute('data-state') === "
                                     "'active'", timeout=20))
            # Reset tokens: the card's "since reset" total goes to 0, today's stays.
            total = (self.card(p) + ".querySelector('table.tokens tr[data-tokens=\"total\"] "
                     "td.since-reset').textContent")
            self.assertTrue(cdp.wait(total + " !== '0'"), cdp.eval(total))
            cdp.eval(self.card(p) + ".querySelector('button[data-action=\"tokens-reset\"]')"
                     ".click()")
            self.assertEqual(cdp.dialogs[-1], "Reset the token totals of endpoint %s?" % p)
            self.assertTrue(cdp.wait(total + " === '0'"), cdp.eval(total))
            got = self.seen_by_every_process(p)
            self.assertEqual(got["tokens"]["total"], 0, got)
            self.assertGreater(got["tokensToday"]["total"], 0, got)
            self.admin_log("tokens/reset", p)
            self.assertEqual(len(cdp.dialogs), 3)
            self.assertEqual(cdp.eval("performance.getEntriesByType('navigation').length"), 1)
        finally:
            cdp.close()

ORDER = [A01Refusals, A02PauseEndpoint, A03PauseKey, A04EndCooldown, A05Recheck,
         A06ResetTokens, A07Restart, A08Page]


def main(argv):
    print("# store: %s" % ts.STORE)
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
