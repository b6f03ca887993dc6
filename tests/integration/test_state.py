#!/usr/bin/env python3
"""Integration tests of the shared state (doc/behaviour.md, Limits and state;
issue 3 "Shared state in GDBM", issue 7 "a Redis store beside GDBM"): the built
responder behind a real web server, against mock upstreams on loopback.
API_TOGETHER_TEST_SERVER picks the server as for test_http.py: lighttpd (default; max-procs 4), fcgid (Apache +
mod_fcgid, up to 4 processes of one thread each) or proxy_fcgi (Apache +
mod_proxy_fcgi in front of one api-together --listen process with its threads);
test_state_fcgid.py and test_state_proxy_fcgi.py only set it and call main()
here. API_TOGETHER_TEST_STORE picks the store: gdbm (default) or redis (each
gateway gets a redis-server of its own, the harness's RedisServer, named by
API_TOGETHER_STORE); test_state_redis.py only sets it. The cases about the GDBM
file itself (S05's file-alone case, S07) are skipped with Redis, the Redis ones
(S09, S10) with GDBM.

    S01 exact RPM / RPD limits with 30 requests fired at once
    S02 the RPM window slides (test-clock build)
    S03 the day rolls over at local midnight of the TZ the server hands the responder
    S04 a cooldown is shared by every process, and a success ends it
    S05 counters, failure runs and token totals survive a restart of the server
        (and of the --listen responder)
    S06 responders killed with SIGKILL under load lose and exceed nothing (with
        proxy_fcgi the --listen process is killed and started again, as systemd's
        Restart= would)
    S07 broken state files: clear log line, 503 answers, service back once repaired
    S08 token totals of JSON and streamed answers add up
    S09 Redis stopped, started again, stalled: 503 with a log line naming it,
        nothing forwarded, service back within about a second (Redis only)
    S10 two hosts (two web servers, separate configs, no shared file), one
        Redis: one set of limits (Redis only)
    S11 key pools (issue 13): each key its own limits, each upstream answer
        charged to its cause (doc/behaviour.md, Key pools)
    S12 priority tiers (issue 15): the higher tier while it has room, then
        the lower one, back once it frees; retries stay in the tier first
    S13 model fallbacks (issue 15): another model after a failure or with no
        room, X-Api-Together-Model, a 4xx passed on, Retry-After of them all
    S14 token limits (issue 14): tpm exact for 10 requests at once, the window
        slides, tpd rolls over at local midnight, tpm 0 (doc/behaviour.md,
        Limits and state, Token limits)
    S15 dayResetTimezone (issue 14): America/Los_Angeles with the responder in
        UTC rolls RPD and tokensToday over at 08:00 UTC in winter, 07:00 UTC in
        summer, across both 2027 switches (doc/behaviour.md, rule 26)
    S16 modelLimits (issue 14): a model at its own limit on a key goes to
        another endpoint or gets 429, another model of the endpoint is still
        served (doc/behaviour.md, rule 27)
    S17 client limits (issue 15): a client key's own rpm and tpm
    S18 history (issue 17): one-minute buckets of the last hour per endpoint,
        key and the gateway equal the traffic sent (successes, failures, upstream
        429s, the gateway's refusals, tokens), roll with the test clock's minute
        and are gone after 60 minutes (doc/behaviour.md, rules 32 to 36)
    S19 usage per client (issue 15): GET /v1/usage equals the traffic sent
        per client and model (JSON and streams, two clients, two models), a
        client sees its own, an admin every one; /metrics and --status; the
        day rolls over and days older than 30 drop

Prints TAP for automake's tap-driver (the runner of test_http.py); exit status 0
when every case passes. Python 3 standard library only. By hand:

    [API_TOGETHER_TEST_SERVER=fcgid] [API_TOGETHER_TEST_STORE=redis] \
        python3 tests/integration/test_state.py [-v] [S02Window.test_name ...]
"""

import collections
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (make dist)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_http as th  # noqa: E402  (shared Base, TAP printer, keys)
from harness import Gateway  # noqa: E402
from mock_upstream import MockUpstream  # noqa: E402
from test_http import CLIENT_KEY, chat, default_server, new_key  # noqa: E402

# A zone whose midnight is neither UTC's nor (most likely) the host's: a day that
# rolls over at the right moment shows that the TZ the server passes is honoured.
try:
    from zoneinfo import ZoneInfo
    LOCAL_TZ = ZoneInfo("Asia/Tokyo")
    TZ_NAME = "Asia/Tokyo"
except Exception:  # no zoneinfo module or no tzdata: the same zone, POSIX style
    LOCAL_TZ = datetime.timezone(datetime.timedelta(hours=9))
    TZ_NAME = "JST-9"

PROCS = 4
CHAT = "/v1/chat/completions"
LOG_PID_RE = re.compile(r"api-together\[(\d+)\]")
# The store of this run (every Gateway that names none gets it).
STORE = harness.DEFAULT_STORE
# What the responder's log lines call it.
STORE_WORDS = ("state file", "Redis store")


def only_store(store, reason):
    """Class or method decorator: runs with that store only; with the other
    each case is reported "ok N - name # SKIP reason" (TAP, counted as passing)."""
    def deco(obj):
        if STORE == store:
            return obj
        return unittest.skip("%s store only: %s" % (store, reason))(obj)
    return deco


def seconds_to_local_midnight(at=None):
    """Seconds from at (seconds since the epoch: the test clock's time, from
    Gateway.clock_now; None: the real time now) to the next local midnight."""
    now = datetime.datetime.fromtimestamp(time.time() if at is None else at, LOCAL_TZ)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
    return (midnight - now).total_seconds()


def note(msg):
    """A TAP comment line (shown by the driver, ignored by the plan)."""
    for line in str(msg).splitlines():
        print("# " + line)
    sys.stdout.flush()


def fire_at_once(n, fn):
    """n threads that each call fn(i) at the same moment; results in order
    (an exception in place of a result when fn raised)."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # reported by the caller
            results[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


def statuses(results):
    return [r.status if hasattr(r, "status") else repr(r) for r in results]


def lighttpd_children(pid):
    """Pids whose parent is pid (the responders lighttpd spawned)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] != "Z":
            out.append(int(d))
    return out


def responder_processes(gw):
    """The live responder processes of a gateway: lighttpd's children; under
    Apache what Gateway.responder_pids() finds (mod_fcgid's processes, or the
    --listen process)."""
    if gw.server == "lighttpd":
        return lighttpd_children(gw.proc.pid)
    return gw.responder_pids()


def answer_kind(r):
    """"200", or the status with the error code of a JSON error, or with
    "server" for a page of the web server itself."""
    if r.status == 200:
        return "200"
    try:
        code = json.loads(r.body.decode("utf-8"))["error"]["code"]
    except Exception:
        code = "server" if b"<html" in r.body.lower() or not r.body else "other"
    return "%d %s" % (r.status, code)


def stale_lock_fds(pids, lock_path):
    """{pid: n} of descriptors the processes hold on a deleted lock_path."""
    out = {}
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target == lock_path + " (deleted)":
                out[pid] = out.get(pid, 0) + 1
    return out


def proc_uid(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cli_status(gw, state_path=None):
    """api-together --status on the gateway's config and state file (or
    Redis); state_path: another state file."""
    env = dict(os.environ, API_TOGETHER_CONFIG=gw.config_path,
               API_TOGETHER_STATE=state_path or gw.state_path, TZ=TZ_NAME)
    env.pop("API_TOGETHER_STORE", None)
    # The store in force, and the test clock of a test-clock gateway: --status
    # reads the usage at the gateway's time.
    env.update({k: v for k, v in gw.responder_env().items()
                if k in ("API_TOGETHER_STORE", "API_TOGETHER_TEST_CLOCK_FILE")})
    return subprocess.run([gw.binary, "--status"], env=env, capture_output=True, text=True,
                          timeout=20)


def cli_row(out, api_id):
    """The fields of api_id's line of --status (ID ENABLED RPM RPD FAILURES ...)."""
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == api_id:
            return f
    return None


class StateBase(th.Base):
    gateway_name = "st-procs4"
    gateway_kwargs = {"max_procs": PROCS, "tz": TZ_NAME}

    def chat_post(self, model, timeout=30):
        return self.post(CHAT, chat(model), timeout=timeout)

    def burst(self, n, model):
        """n chat requests fired at once."""
        return fire_at_once(n, lambda i: self.chat_post(model))

    def status_entry(self, api_id, gw=None):
        gw = gw or self.gw
        r = gw.request("GET", "/v1/status", key=CLIENT_KEY)
        self.assertStatus(r, 200)
        for a in r.json().get("apis", []):
            if a.get("id") == api_id:
                return a
        self.fail("endpoint %s not in /v1/status: %s" % (api_id, r))

    def token_detail(self, api_id, gw=None):
        gw = gw or self.gw
        r = gw.request("GET", "/v1/token/stats", key=CLIENT_KEY)
        self.assertStatus(r, 200)
        return r.json()

    def log_lines(self, offset=None, gw=None, want=None):
        """The log's lines since offset; with want (a test of a line), once
        one passes it or 10 s passed: a responder logs after answering."""
        gw = gw or self.gw
        offset = self.log_offset if offset is None else offset
        if want is None:
            time.sleep(0.15)  # for a figure noted, not an assertion
            return gw.log_since(offset).splitlines()
        return gw.wait_log(offset, lambda t: any(want(l) for l in t.splitlines())).splitlines()

    def process_sockets(self):
        """{pid: socket} of every responder process (harness.fastcgi_request
        reaches each); mod_fcgid starts processes as requests wait, so there
        slow requests at once first. Call it before configure(): it writes
        a config of its own there."""
        if self.gw.server == "fcgid":
            warm = self.mock("warm", "chat", delay=0.3)
            self.configure([self.api(self.uid("warm"), warm.url, ["m-warm"])])
            self.burst(2 * PROCS, "m-warm")
        socks = self.gw.process_sockets()
        self.assertEqual(sorted(socks), sorted(self.gw.responder_pids()),
                         "a responder process without a socket found: %s" % socks)
        if self.gw.server == "lighttpd":
            self.assertEqual(len(socks), PROCS, socks)
        return socks

    def pids_of(self, lines, needle):
        out = collections.Counter()
        for line in lines:
            if needle in line:
                m = LOG_PID_RE.search(line)
                if m:
                    out[int(m.group(1))] += 1
        return out

    def assertCounts(self, sts, want, what):
        got = collections.Counter(sts)
        self.assertEqual(dict(got), want, "%s: want %s, got %s (in order: %s)"
                         % (what, want, dict(got), sts))


# ---------------------------------------------------------------------------
class S01ExactLimits(StateBase):
    """30 requests at once against 4 processes: the limit holds exactly."""

    def test_rpm7_30_at_once(self):
        # Through each process's own socket in turn (7 or 8 each of 4), not
        # where the web server would send them: every process takes part.
        socks = [v for _, v in sorted(self.process_sockets().items())]
        up = self.mock("rpm7")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-rpm7"], rpm=7)])
        offset = self.gw.log_size()
        res = fire_at_once(30, lambda i: harness.fastcgi_request(
            socks[i % len(socks)], "POST", self.gw.url_path(CHAT), body=chat("m-rpm7"),
            key=CLIENT_KEY))
        sts = statuses(res)
        self.assertCounts(sts, {200: 7, 429: 23}, "rpm 7, 30 requests at once")
        self.assertEqual(up.count(), 7, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
                self.assertRetryAfter(r, 1, 60)
        st = self.status_entry(aid)
        self.assertEqual((st["usage"]["rpm"], st["usage"]["rpd"]), (7, 7), st)
        logged = self.gw.wait_log(offset, lambda t: t.count("model=m-rpm7") >= 30)
        pids = self.pids_of(logged.splitlines(), "model=m-rpm7")
        note("rpm 7: answers came from %d responder processes %s" % (len(pids), dict(pids)))
        if self.gw.server == "proxy_fcgi":
            note("one --listen process: the 30 were served by its threads")
            return
        self.assertEqual(len(pids), len(socks), "each process was asked: %s" % dict(pids))
        self.assertGreaterEqual(len(pids), 2, "one responder process: the test shows nothing "
                                "about processes: %s" % dict(pids))

    def test_rpd5_30_at_once(self):
        up = self.mock("rpd5")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-rpd5"], rpd=5)])
        # the answers come between the two (a burst can take seconds behind
        # mod_fcgid, which makes a request wait 1 s when no process is free)
        to_midnight_before = seconds_to_local_midnight()
        res = self.burst(30, "m-rpd5")
        to_midnight = seconds_to_local_midnight()
        sts = statuses(res)
        self.assertCounts(sts, {200: 5, 429: 25}, "rpd 5, 30 requests at once")
        self.assertEqual(up.count(), 5, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
                ra = self.assertRetryAfter(r, 1, int(to_midnight_before) + 2)
                # the day ends at midnight of TZ=%s, not of UTC or of the host
                self.assertGreater(ra, to_midnight - 15,
                                   "Retry-After %d, but local (%s) midnight is %d s away%s"
                                   % (ra, TZ_NAME, to_midnight, self.diag(r)))
        st = self.status_entry(aid)
        self.assertEqual(st["usage"]["rpd"], 5, st)
        self.assertIs(st["available"], False, st)


# ---------------------------------------------------------------------------
class ClockBase(StateBase):
    gateway_name = "st-clock"
    gateway_kwargs = {"max_procs": PROCS, "tz": TZ_NAME, "binary": harness.TESTCLOCK_BIN,
                      "clock": True}

    @classmethod
    def setUpClass(cls):
        if not os.access(harness.TESTCLOCK_BIN, os.X_OK):
            raise unittest.SkipTest("test-clock build not found: %s (make check builds it)"
                                    % harness.TESTCLOCK_BIN)
        super().setUpClass()

    def seq(self, n, model):
        return [self.chat_post(model) for _ in range(n)]


class S02Window(ClockBase):
    """The RPM window is a sliding 60 s, not a fixed minute."""

    def test_full_burst_frees_after_60s(self):
        up = self.mock("win")
        self.configure([self.api(self.uid("a"), up.url, ["m-win"], rpm=7)])
        # t: 7 allowed, 7 more refused
        self.assertCounts(statuses(self.burst(7, "m-win")), {200: 7}, "7 at t")
        res = self.burst(7, "m-win")
        self.assertCounts(statuses(res), {429: 7}, "7 more at t")
        for r in res:
            self.assertRetryAfter(r, 55, 60)
        # t+30: still nothing
        self.gw.advance_clock(30)
        res = self.seq(3, "m-win")
        self.assertCounts(statuses(res), {429: 3}, "at t+30")
        for r in res:
            self.assertRetryAfter(r, 25, 31)
        self.assertEqual(up.count(), 7)
        # t+61: the 7 of t have left the window. (On a clock running in real
        # time this flaked twice under the sanitizer build, where a second
        # more was then given; the clock stands still now, so t+61 is t+61.)
        self.gw.advance_clock(31)
        self.assertCounts(statuses(self.burst(7, "m-win")), {200: 7}, "7 at t+61")
        r = self.chat_post("m-win")
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 55, 60)
        self.assertEqual(up.count(), 14)

    def test_spread_attempts_leave_one_by_one(self):
        up = self.mock("spread")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-spread"], rpm=7)])
        self.assertCounts(statuses(self.seq(3, "m-spread")), {200: 3}, "3 at t")
        self.gw.advance_clock(30)
        self.assertCounts(statuses(self.seq(4, "m-spread")), {200: 4}, "4 at t+30")
        r = self.chat_post("m-spread")
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 25, 31)  # the first of t leaves at t+60
        # t+61: the 3 of t are out, the 4 of t+30 still in
        self.gw.advance_clock(31)
        got = statuses(self.seq(7, "m-spread"))
        self.assertEqual(got, [200] * 3 + [429] * 4, "at t+61 exactly 3 more may go")
        st = self.status_entry(aid)
        self.assertEqual(st["usage"]["rpm"], 7, st)
        r = self.chat_post("m-spread")
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 25, 31)  # the 4 of t+30 leave at t+90
        # t+91: the 4 of t+30 are out too
        self.gw.advance_clock(30)
        got = statuses(self.seq(5, "m-spread"))
        self.assertEqual(got, [200] * 4 + [429], "at t+91 exactly 4 more may go")
        self.assertEqual(up.count(), 3 + 4 + 3 + 4)


class S03Midnight(ClockBase):
    """RPD is per calendar day of the local time of the TZ the responder gets."""

    def test_day_rolls_over_at_local_midnight(self):
        up = self.mock("mid")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-mid"], rpd=3)])
        # move the clock to 23:59:50 local
        now = datetime.datetime.fromtimestamp(self.gw.clock_now(), LOCAL_TZ)
        target = now.replace(hour=23, minute=59, second=50, microsecond=0)
        if target - now < datetime.timedelta(seconds=1):
            target += datetime.timedelta(days=1)
        self.gw.advance_clock((target - now).total_seconds())
        self.assertCounts(statuses(self.burst(3, "m-mid")), {200: 3}, "3 at 23:59:50")
        res = self.burst(4, "m-mid")
        self.assertCounts(statuses(res), {429: 4}, "after the day's 3")
        for r in res:
            self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
            # local midnight is 10 s away (UTC's is hours away)
            self.assertRetryAfter(r, 1, 11)
        self.assertEqual(self.status_entry(aid)["usage"]["rpd"], 3)
        self.assertEqual(up.count(), 3)
        # cross midnight: 00:00:02 local
        self.gw.advance_clock(12)
        self.assertEqual(self.status_entry(aid)["usage"]["rpd"], 0,
                         "usage.rpd of the new day")
        self.assertCounts(statuses(self.burst(5, "m-mid")), {200: 3, 429: 2},
                          "the new day's requests")
        r = self.chat_post("m-mid")
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 86400 - 30, 86400)
        self.assertEqual(self.status_entry(aid)["usage"]["rpd"], 3)
        self.assertEqual(up.count(), 6)


    def test_tokens_today_roll_over_at_local_midnight(self):
        # /v1/status tokensToday: the local day's tokens, as usage.rpd; the
        # totals since a reset (tokens) go on past midnight.
        up = self.mock("midtok", "chat", usage=(11, 7))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-midtok"])])
        now = datetime.datetime.fromtimestamp(self.gw.clock_now(), LOCAL_TZ)
        target = now.replace(hour=23, minute=59, second=50, microsecond=0)
        if target - now < datetime.timedelta(seconds=1):
            target += datetime.timedelta(days=1)
        self.gw.advance_clock((target - now).total_seconds())
        self.assertCounts(statuses(self.seq(2, "m-midtok")), {200: 2}, "2 at 23:59:50")
        st = self.status_entry(aid)
        self.assertEqual(st["tokensToday"], {"prompt": 22, "completion": 14, "total": 36}, st)
        # 00:00:02 local: nothing yet today, the totals unchanged
        self.gw.advance_clock(12)
        st = self.status_entry(aid)
        self.assertEqual(st["tokensToday"], {"prompt": 0, "completion": 0, "total": 0},
                         "tokensToday of the new day: %s" % st)
        self.assertEqual(st["tokens"]["total"], 36, st)
        self.assertCounts(statuses(self.seq(1, "m-midtok")), {200: 1}, "1 after midnight")
        st = self.status_entry(aid)
        self.assertEqual(st["tokensToday"], {"prompt": 11, "completion": 7, "total": 18}, st)
        self.assertEqual(st["tokens"]["total"], 54, st)


class S04Cooldown(ClockBase):
    """A cooldown started by failures in one process holds in all of them.
    Each process is reached on its own FastCGI socket (harness.fastcgi_request),
    not through the web server, which chooses the process itself: once lighttpd
    gave one of 4 processes none of 8 x 24 requests."""

    def direct(self, sock, model):
        return harness.fastcgi_request(sock, "POST", self.gw.url_path(CHAT), body=chat(model),
                                       key=CLIENT_KEY)

    def answered_by(self, offset, n):
        """The pids of the n lines of model=m-cool logged since offset."""
        lines = [l for l in self.gw.wait_log(offset, lambda t: t.count("model=m-cool") >= n)
                 .splitlines() if "model=m-cool" in l]
        return [int(m.group(1)) for m in map(LOG_PID_RE.search, lines) if m]

    def test_cooldown_shared_by_every_process(self):
        socks = self.process_sockets()
        note("responder processes and their sockets: %s" % socks)
        bad = self.mock("cool", "status", status=500, body='{"error":{"message":"down"}}')
        aid = self.uid("a")
        self.configure([self.api(aid, bad.url, ["m-cool"])],
                       cooldown={"failures": 2, "seconds": 30})
        first, *others = sorted(socks)
        # both failures in one process
        offset = self.gw.log_size()
        for _ in range(2):
            r = self.direct(socks[first], "m-cool")
            self.assertEqual(r.status, 500, r.describe())
        self.assertEqual(self.answered_by(offset, 2), [first, first])
        st = self.status_entry(aid)
        self.assertEqual(st["errorCount"], 2, st)
        self.assertIs(st["temporarilyDisabled"], True, st)
        self.assertIs(st["available"], False, st)
        # every process, the one that saw them and each other, holds the endpoint back
        bad.set("chat")
        offset = self.gw.log_size()
        for pid in [first] + others:
            r = self.direct(socks[pid], "m-cool")
            self.assertError(r, 503, "service_unavailable", "no_available_api")
            self.assertRetryAfter(r, 1, 30)
        self.assertEqual(self.answered_by(offset, len(socks)), [first] + others)
        self.assertEqual(bad.count(), 2, "a request reached the endpoint during its cooldown")
        # after the cooldown a success (in another process) ends the run, for everybody
        self.gw.advance_clock(31)
        last = (others or [first])[-1]
        self.assertStatus(self.direct(socks[last], "m-cool"), 200)
        st = self.status_entry(aid)
        self.assertEqual(st["errorCount"], 0, st)
        self.assertIs(st["temporarilyDisabled"], False, st)
        self.assertIs(st["available"], True, st)
        for pid in [first] + others:
            self.assertStatus(self.direct(socks[pid], "m-cool"), 200)
        self.assertCounts(statuses(self.burst(16, "m-cool")), {200: 16}, "after the cooldown")
        self.assertEqual(bad.count(), 2 + 1 + len(socks) + 16)


class S18History(ClockBase):
    """The last hour in one-minute buckets (issue 17 point 2; doc/behaviour.md,
    Limits and state, rules 32 to 36, and HTTP: /v1/status "history"): the
    buckets of every endpoint, key and the gateway equal the traffic sent,
    roll with the (test) clock's minute and are gone after 60 minutes; the
    gateway's own refusals land in its row at the sync of their process."""

    def status(self):
        r = self.gw.request("GET", "/v1/status", key=CLIENT_KEY)
        self.assertStatus(r, 200)
        return r.json()

    @staticmethod
    def bucket(history, minute):
        """The bucket of the minute starting at epoch second minute; None
        when /v1/status does not report it."""
        for b in history:
            if b["start"] == minute:
                return b
        return None

    def wait_refused(self, minute, want):
        """The gateway's bucket of minute once it counts want refusals: each
        process folds its refusals into the store once a second."""
        deadline = time.monotonic() + 10
        while True:
            b = self.bucket(self.status()["gateway"]["history"], minute)
            if (b is not None and b["refused"] >= want) or time.monotonic() > deadline:
                return b
            time.sleep(0.2)

    def test_buckets_equal_the_traffic_roll_and_drop(self):
        ok = self.mock("hok", "chat", usage=(10, 15))
        bad = self.mock("hbad", "status", status=500, body='{"error":{"message":"down"}}')
        lim = self.mock("hlim", "status", status=429, headers={"Retry-After": "30"},
                        body='{"error":{"message":"slow down"}}')
        a, b, c = self.uid("a"), self.uid("b"), self.uid("c")
        self.configure([self.api(a, ok.url, ["m-h-ok"], rpm=5),
                        self.api(b, bad.url, ["m-h-bad"]),
                        self.api(c, lim.url, ["m-h-lim"])],
                       cooldown={"failures": 5, "seconds": 30})
        # Refusals of earlier cases reach the store within a second, in
        # their minute; then this case starts a minute of its own, 1 s in.
        time.sleep(1.5)
        now = self.gw.clock_now()
        self.gw.advance_clock(60 - now % 60 + 1)
        m = int(self.gw.clock_now()) // 60 * 60
        st = self.status()
        self.assertEqual(len(st["gateway"]["history"]), 60)
        self.assertEqual(st["gateway"]["history"][-1]["start"], m)
        base = self.bucket(st["gateway"]["history"], m)["refused"]

        self.assertCounts(statuses(self.seq(5, "m-h-ok")), {200: 5}, "5 served")
        self.assertCounts(statuses(self.seq(3, "m-h-ok")), {429: 3}, "3 refused (rpm 5)")
        self.assertCounts(statuses(self.seq(2, "m-h-bad")), {500: 2}, "2 failures")
        self.assertEqual(bad.count(), 2)
        self.chat_post("m-h-lim")
        self.assertEqual(lim.count(), 1)

        g = self.wait_refused(m, base + 3)
        st = self.status()
        rows = {x["id"]: x for x in st["apis"]}
        for api_id, want in ((a, dict(requests=5, successes=5, failures=0, upstream429=0,
                                      tokens=125)),
                             (b, dict(requests=2, successes=0, failures=2, upstream429=0,
                                      tokens=0)),
                             (c, dict(requests=1, successes=0, failures=0, upstream429=1,
                                      tokens=0))):
            hist = rows[api_id]["history"]
            self.assertEqual(len(hist), 60, api_id)
            self.assertEqual([x["start"] for x in hist],
                             list(range(m - 59 * 60, m + 60, 60)), "oldest first, by minute")
            got = self.bucket(hist, m)
            self.assertEqual({k: got[k] for k in want}, want, api_id)
            self.assertNotIn("refused", got, "refusals are the gateway's row only")
            self.assertGreaterEqual(got["latencyMsSum"], 0)
            self.assertEqual(sum(x["requests"] for x in hist), want["requests"], api_id)
            # Its one key's row is the endpoint's.
            self.assertEqual(rows[api_id]["keys"][0]["history"], hist, api_id)
        g = self.bucket(self.status()["gateway"]["history"], m)
        self.assertEqual(g["refused"] - base, 3, g)
        self.assertEqual((g["requests"], g["successes"], g["failures"], g["upstream429"],
                          g["tokens"]), (8, 5, 2, 1, 125), g)

        # The next minute: its own bucket; the first one's stays.
        self.gw.advance_clock(60)
        self.assertStatus(self.chat_post("m-h-ok"), 200)
        hist = self.status_entry(a)["history"]
        self.assertEqual(self.bucket(hist, m)["requests"], 5)
        self.assertEqual(self.bucket(hist, m + 60)["requests"], 1)
        self.assertEqual(hist[-1]["start"], m + 60)
        # 60 minutes after the first minute it is gone, the second stays...
        self.gw.advance_clock(59 * 60)
        hist = self.status_entry(a)["history"]
        self.assertIsNone(self.bucket(hist, m))
        self.assertEqual(hist[0]["start"], m + 60)
        self.assertEqual(hist[0]["requests"], 1)
        self.assertEqual(sum(x["requests"] for x in hist), 1)
        # ...and after 61 minutes both are.
        self.gw.advance_clock(60)
        st = self.status()
        for x in st["apis"]:
            self.assertEqual(sum(y["requests"] for y in x["history"]), 0, x["id"])
        self.assertEqual(sum(y["refused"] for y in st["gateway"]["history"]), 0)

    def test_pool_keys_each_their_own_buckets(self):
        """A pool's keys each keep their buckets; the endpoint's are their sum
        (rule 32). The least recently used key serves: 3 requests give 2, 1."""
        up = self.mock("hpool", "chat", usage=(3, 4))
        aid = self.uid("p")
        keys = [new_key("sk-up-"), new_key("sk-up-")]
        self.configure([self.api(aid, up.url, ["m-h-pool"], apiKey=keys)])
        now = self.gw.clock_now()
        self.gw.advance_clock(60 - now % 60 + 1)
        m = int(self.gw.clock_now()) // 60 * 60
        self.assertCounts(statuses(self.seq(3, "m-h-pool")), {200: 3}, "3 served")
        st = self.status_entry(aid)
        per_key = sorted(self.bucket(k["history"], m)["requests"] for k in st["keys"])
        self.assertEqual(per_key, [1, 2], st["keys"])
        self.assertEqual(sorted(self.bucket(k["history"], m)["tokens"] for k in st["keys"]),
                         [7, 14])
        got = self.bucket(st["history"], m)
        self.assertEqual((got["requests"], got["successes"], got["tokens"]), (3, 3, 21), got)


# ---------------------------------------------------------------------------
class OwnGatewayBase(StateBase):
    """A test that starts (and stops) a gateway of its own."""

    @classmethod
    def setUpClass(cls):
        pass

    def setUp(self):
        self.gw = None
        self.mocks = []
        self._n = 0
        self.log_offset = 0

    def tearDown(self):
        super().tearDown()
        if self.gw is not None:
            self.gw.stop()

    def start_gateway(self, apis, name, gateway_kwargs=None, **server):
        kw = {"max_procs": PROCS, "tz": TZ_NAME}
        kw.update(gateway_kwargs or {})
        self.gw = Gateway({"server": default_server(**server), "apis": apis}, name=name, **kw)
        self.gw.start()
        return self.gw


class S05Restart(OwnGatewayBase):
    """Nothing of the state is lost when the server and its responders restart."""

    def test_usage_survives_restart(self):
        ok = self.mock("ok", "auto", usage=(11, 7), stream_usage=(5, 3))
        bad = self.mock("bad", "status", status=500, body="no")
        a, b, c = "rs-ok", "rs-onefail", "rs-cooling"
        gw = self.start_gateway([self.api(a, ok.url, ["m-ok"], rpd=6, rpm=50),
                                 self.api(b, bad.url, ["m-bad1"]),
                                 self.api(c, bad.url, ["m-bad2"])],
                                "restart", cooldown={"failures": 2, "seconds": 600})
        self.assertCounts(statuses(self.burst(3, "m-ok")), {200: 3}, "json answers")
        s = gw.stream("POST", CHAT, body=chat("m-ok", stream=True), key=CLIENT_KEY)
        self.assertEqual(s.status, 200, s.describe())
        self.assertStatus(self.chat_post("m-bad1"), 500)
        self.assertStatus(self.chat_post("m-bad2"), 500)
        self.assertStatus(self.chat_post("m-bad2"), 500)
        self.assertTrue(self.wait_for(lambda: self.status_entry(a)["tokens"]["total"] == 62),
                        self.status_entry(a))

        def snapshot():
            r = gw.request("GET", "/v1/status", key=CLIENT_KEY)
            self.assertStatus(r, 200)
            apis = {x["id"]: x for x in r.json()["apis"]}
            r = gw.request("GET", "/v1/token/stats", key=CLIENT_KEY)
            self.assertStatus(r, 200)
            return apis, r.json()["detailedStats"], r.json()["summary"]

        before = snapshot()
        self.assertEqual(before[0][a]["usage"], {"rpm": 4, "rpd": 4}, before[0][a])
        self.assertEqual(before[0][a]["tokens"], {"prompt": 38, "completion": 24, "total": 62})
        self.assertEqual(before[0][b]["errorCount"], 1, before[0][b])
        self.assertIs(before[0][c]["temporarilyDisabled"], True, before[0][c])
        self.assertEqual(before[1][a]["requests"], 4, before[1])
        old_pids = set(gw.responder_pids())

        gw.stop(keep=True)
        self.assertEqual(gw.leftovers_after_term, [], "responders outlived the stop of %s"
                         % gw.server_label)
        cli = cli_status(gw)
        self.assertEqual(cli.returncode, 0, "--status with the server stopped: %s %s"
                         % (cli.stdout, cli.stderr))
        row = cli_row(cli.stdout, a)
        self.assertIsNotNone(row, cli.stdout)
        self.assertEqual(row[3], "4/6", "--status RPD column of %s:\n%s" % (a, cli.stdout))
        gw.start()
        self.assertFalse(old_pids & set(gw.responder_pids()), "not a fresh set of responders")

        after = snapshot()
        for api_id in (a, b, c):
            for k in ("usage", "tokens", "errorCount", "temporarilyDisabled", "available",
                      "cooldownUntil"):
                self.assertEqual(after[0][api_id].get(k), before[0][api_id].get(k),
                                 "%s.%s changed in the restart:\nbefore %s\nafter  %s"
                                 % (api_id, k, before[0][api_id], after[0][api_id]))
        self.assertEqual(after[1], before[1], "/v1/token/stats detailedStats changed")
        self.assertEqual(after[2], before[2], "/v1/token/stats summary changed")
        # and the counts still bind: 2 more of the day's 6, the cooldown still on
        self.assertCounts(statuses(self.burst(5, "m-ok")), {200: 2, 429: 3}, "after restart")
        r = self.chat_post("m-bad2")
        self.assertError(r, 503, "service_unavailable", "no_available_api")
        self.assertEqual(ok.count(), 6)
        self.assertEqual(bad.count(), 3)


    @only_store("gdbm", "the live copy in the lock file and the GDBM file it syncs to; "
                "Redis keeps its data itself")
    def test_file_alone_has_the_counts_within_two_seconds(self):
        """The GDBM store's steps go to a live copy in the lock file, trusted only
        within one boot; the state file gets it within a second (README: what a
        power cut can lose). Without the live copy, as after a reboot, a restart
        finds every count in the file."""
        ok = self.mock("ok", "auto", usage=(11, 7))
        a = "sync-ok"
        gw = self.start_gateway([self.api(a, ok.url, ["m-ok"], rpd=9, rpm=50)], "sync")
        self.assertCounts(statuses(self.burst(5, "m-ok")), {200: 5}, "json answers")
        # A client can have its answer before the responder recorded its usage
        # (seen under load): wait for all five, as test_usage_survives_restart does.
        self.assertTrue(self.wait_for(lambda: self.status_entry(a)["tokens"]["total"] == 90),
                        self.status_entry(a))
        before = self.status_entry(a)
        self.assertEqual(before["usage"], {"rpm": 5, "rpd": 5}, before)
        # The next sync (each process's, once a second of real time, later on
        # a loaded machine) brings the file up to the live copy: wait for the
        # counts in the file itself, read alone (a copy of it, without the
        # live copy in its lock file), not a fixed 2.2 s.
        copy_dir = tempfile.mkdtemp(prefix="api-together-file-alone-")
        self.addCleanup(shutil.rmtree, copy_dir, True)

        def file_alone():
            copy = os.path.join(copy_dir, "state.db")
            for p in (copy, copy + ".lock"):
                if os.path.exists(p):
                    os.unlink(p)
            shutil.copyfile(gw.state_path, copy)
            open(copy + ".lock", "w").close()  # empty: no live copy
            cli = cli_status(gw, copy)
            row = cli_row(cli.stdout, a)
            return (row[3], row[6]) if row else cli.stdout + cli.stderr

        t0 = time.monotonic()
        synced = self.wait_for(lambda: file_alone() == ("5/9", "55/35/90"), timeout=20,
                               step=0.1)
        self.assertTrue(synced, "the state file alone: %s" % (file_alone(),))
        note("the state file alone had the counts %.1f s after the status page did"
             % (time.monotonic() - t0))
        gw.stop(keep=True)
        os.unlink(gw.state_path + ".lock")
        gw.start()
        after = self.status_entry(a)
        for k in ("usage", "tokens"):
            self.assertEqual(after[k], before[k], "%s without the live copy: %s, before %s"
                             % (k, after, before))
        self.assertCounts(statuses(self.burst(6, "m-ok")), {200: 4, 429: 2}, "after restart")
        self.assertEqual(ok.count(), 9)


class S06Kill9(OwnGatewayBase):
    """SIGKILL of responders at random moments under load (doc/behaviour.md,
    Limits and state, GDBM: a process killed at any moment loses nothing and
    never lets a limit be exceeded)."""

    RPD = 200
    SECONDS = 6.0
    # mod_fcgid throttles spawning (each start and each end of a process adds
    # to a score; above FcgidSpawnScoreUpLimit it starts none) and notices dead
    # processes every 3 s: with a kill every 0.2 s it would soon run none, and
    # a request finding none free waits in steps of 1 s. Here it may restart
    # them as fast as they die, with a process for each of the 9 clients.
    SERVER_TUNING = {"fcgid": {"max_procs": 12, "apache_lines": (
        "FcgidSpawnScoreUpLimit 1000\n"
        "FcgidTerminationScore 0\n"
        "FcgidErrorScanInterval 1\n"
        "FcgidZombieScanInterval 1\n")}}

    def test_kill9_under_load(self):
        lim = self.mock("lim", "chat", usage=(1, 1))
        free = self.mock("free", "chat", usage=(1, 1))
        L, U = "kill-limited", "kill-free"
        gw = self.start_gateway([
            self.api(L, lim.url, ["m-kill", "m-kill-l"], rpd=self.RPD, rpm=1000, weight=1),
            self.api(U, free.url, ["m-kill"], weight=3)], "kill9",
            self.SERVER_TUNING.get(th.SERVER))
        stop = threading.Event()
        lock = threading.Lock()
        answers = collections.Counter()
        polls = []  # (t, L rpd, U rpd, L tokens, U tokens)
        poll_errors = collections.Counter()
        kills = []
        bad_answers = []

        def client(i):
            while not stop.is_set():
                try:
                    r = gw.request("POST", CHAT, body=chat("m-kill"), key=CLIENT_KEY, timeout=15)
                    key = answer_kind(r)
                    # the server's own 5xx for a killed responder are expected; so is
                    # the upstream answer of an endpoint; any error of the
                    # responder itself is not
                    if r.status != 200 and not key.endswith(" server"):
                        bad_answers.append(r.describe(300))
                except Exception as e:  # a killed responder: the server closes or errs
                    key = type(e).__name__
                with lock:
                    answers[key] += 1

        def poller():
            while not stop.is_set():
                try:
                    r = gw.request("GET", "/v1/status", key=CLIENT_KEY, timeout=10)
                    if r.status == 200:
                        apis = {x["id"]: x for x in r.json()["apis"]}
                        polls.append((time.monotonic(), apis[L]["usage"]["rpd"],
                                      apis[U]["usage"]["rpd"], apis[L]["tokens"]["total"],
                                      apis[U]["tokens"]["total"]))
                    else:
                        poll_errors[r.status] += 1
                except Exception as e:
                    poll_errors[type(e).__name__] += 1
                time.sleep(0.03)

        def killer():
            rnd = random.Random(7)
            while not stop.wait(rnd.uniform(0.1, 0.3)):
                kids = responder_processes(gw)
                if not kids:
                    continue
                pid = rnd.choice(kids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except OSError:
                    pass
                if gw.server == "proxy_fcgi":
                    # nobody starts it again but its supervisor (systemd's Restart=)
                    gw.restart_listener()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        threads += [threading.Thread(target=poller), threading.Thread(target=killer)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # SECONDS at least, and until the loop did what it is for (10 kills,
        # 100 answers; asserted below): on a slow machine (the sanitizer
        # build) that takes longer, not fewer.
        time.sleep(self.SECONDS)
        while (len(kills) < 10 or answers["200"] < 100) and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(30)
        lim_during = lim.count()
        note("kill -9 loop: %.1fs, %d kills, client answers %s, %d status polls (failed %s); "
             "limited endpoint got %d, free one %d"
             % (time.monotonic() - t0, len(kills), dict(answers), len(polls), dict(poll_errors),
                lim_during, free.count()))
        self.assertGreaterEqual(len(kills), 10, "the killer hardly ran")
        self.assertGreaterEqual(answers["200"], 100, "hardly any load: %s" % dict(answers))
        self.assertFalse(bad_answers, "unexpected answers:\n" + "\n".join(bad_answers[:5]))

        # the service comes back, the state file opens
        self.assertTrue(self.wait_for(
            lambda: gw.request("GET", "/health").status == 200, timeout=10),
            "no /health 200 after the kill loop")
        cli = cli_status(gw)
        self.assertEqual(cli.returncode, 0, "--status after the kill loop: rc %d %s %s"
                         % (cli.returncode, cli.stdout, cli.stderr))

        # no count ever went backwards
        for name, k in (("usage.rpd of " + L, 1), ("usage.rpd of " + U, 2),
                        ("tokens.total of " + L, 3), ("tokens.total of " + U, 4)):
            seq = [p[k] for p in polls]
            drops = [(i, seq[i - 1], seq[i]) for i in range(1, len(seq)) if seq[i] < seq[i - 1]]
            self.assertFalse(drops, "%s went backwards between polls (index, before, after): %s"
                             % (name, drops[:5]))

        # every attempt that reached an upstream was counted; no limit exceeded
        st_l, st_u = self.status_entry(L), self.status_entry(U)
        self.assertLessEqual(lim_during, self.RPD, "the limited endpoint got more than its rpd")
        self.assertLessEqual(st_l["usage"]["rpd"], self.RPD, st_l)
        self.assertGreaterEqual(st_l["usage"]["rpd"], lim.count(),
                                "attempts on %s reached the upstream uncounted" % L)
        self.assertGreaterEqual(st_u["usage"]["rpd"], free.count(),
                                "attempts on %s reached the upstream uncounted" % U)
        if polls:
            self.assertGreaterEqual(st_l["usage"]["rpd"], polls[-1][1])
            self.assertGreaterEqual(st_u["usage"]["rpd"], polls[-1][2])

        # use up the rest of the day: the limit holds exactly, state and upstream agree
        for _ in range(15):
            res = fire_at_once(32, lambda i: self.chat_post("m-kill-l"))
            kinds = [answer_kind(r) if hasattr(r, "status") else repr(r) for r in res]
            # the server may still hold a killed responder's slot for a moment
            self.assertEqual(set(kinds) - {"200", "429 rate_limit_exceeded", "503 server"},
                             set(), kinds)
            if "429 rate_limit_exceeded" in kinds:
                break
        st_l = self.status_entry(L)
        self.assertEqual(st_l["usage"]["rpd"], self.RPD, st_l)
        r = self.chat_post("m-kill-l")
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertLessEqual(lim.count(), self.RPD, "the limited endpoint got more than its rpd")
        lost = st_l["usage"]["rpd"] - lim.count()
        note("counted on %s but never received (killed between count and send): %d"
             % (L, lost))
        self.assertLessEqual(lost, len(kills), "more uncounted-by-upstream attempts than kills")
        cli = cli_status(gw)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        row = cli_row(cli.stdout, L)
        self.assertIsNotNone(row, cli.stdout)
        self.assertEqual(row[3], "%d/%d" % (self.RPD, self.RPD), cli.stdout)
        errs = [l for l in gw.log_since(0).splitlines() if any(w in l for w in STORE_WORDS)]
        self.assertFalse(errs, "state store errors after kills:\n" + "\n".join(errs[:10]))


# ---------------------------------------------------------------------------
# Holds the lock on argv[1] until its stdin is closed (release_lock): for as
# long as the test needs it, however slow the machine.
HOLD_LOCK = r"""
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def hold_lock(path):
    return subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def release_lock(holder):
    holder.stdin.close()
    holder.wait(10)


@only_store("gdbm", "broken state files and the lock file; S09 has the Redis faults")
class S07BrokenState(StateBase):
    """Each broken state file: a clear log line naming it, 503 for proxied requests
    and /health, nothing forwarded, no crash; repaired, service resumes without a
    restart (doc/behaviour.md, HTTP: /health; Limits and state: GDBM). One
    gateway, its responders unprivileged so file modes count, its state file in
    a folder of its own that is missing at start."""

    gateway_name = "st-broken"

    @classmethod
    def setUpClass(cls):
        kw = {"max_procs": PROCS, "tz": TZ_NAME, "state_name": "state/state.db"}
        cls.unprivileged = os.geteuid() != 0
        if os.geteuid() == 0:
            import pwd
            try:
                pwd.getpwnam("nobody")
                group = next(g for g in ("nogroup", "nobody") if _has_group(g))
                kw.update(user="nobody", group=group)
                cls.unprivileged = True
            except (KeyError, StopIteration):
                pass
        cls.gateway_kwargs = kw
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.up = self.mock("broken")
        self.aid = "broken-ep"
        self.configure([self.api(self.aid, self.up.url, ["m-broken"])])
        if self._testMethodName != "test_a_folder_missing_at_start":
            self.ensure_state_file()

    # -- helpers
    def ensure_state_file(self):
        """The state folder and file as test_a leaves them: every other case
        starts from them, whichever cases ran before it."""
        if os.path.exists(self.gw.state_path):
            return
        if not os.path.isdir(self.state_dir):
            os.mkdir(self.state_dir, 0o755)
            self.give(self.state_dir)
        self.assertStatus(self.chat_post("m-broken"), 200)
        self.assertTrue(os.path.exists(self.gw.state_path), self.gw.log_tail(10))
        self.log_offset = self.gw.log_size()

    @property
    def state_dir(self):
        return os.path.dirname(self.gw.state_path)

    def give(self, path):
        if self.gw.user or self.gw.group:
            self.gw.chown_to_server_user(path)

    def pids(self):
        return sorted(responder_processes(self.gw))

    def expect_broken(self, what, log_needle, n=3):
        """/health and proxied requests give 503, nothing is forwarded, and the log
        names the state file."""
        before = self.up.count()
        r = self.gw.request("GET", "/health")
        self.assertStatus(r, 503)
        j = r.json()
        self.assertEqual(j.get("status"), "error", "%s: /health%s" % (what, self.diag(r)))
        res = fire_at_once(n, lambda i: self.chat_post("m-broken"))
        for r in res:
            self.assertTrue(hasattr(r, "status"), "%s: %r" % (what, r))
            self.assertErrorShape(r, 503)
        self.assertEqual(self.up.count(), before, "%s: forwarded without a usable state file"
                         % what)
        def wanted(l):
            return re.search(r"\berror\b", l) and "state file" in l and log_needle in l
        lines = [l for l in self.log_lines(want=wanted) if wanted(l)]
        self.assertTrue(lines, "%s: no error line naming the state file (%r) in the log:\n%s"
                        % (what, log_needle, "\n".join(self.log_lines()[-15:])))
        note("%s: %s" % (what, lines[-1].split(": ", 1)[-1]))
        return lines

    def expect_working(self, what):
        r = self.gw.request("GET", "/health")
        self.assertStatus(r, 200)
        before = self.up.count()
        res = fire_at_once(8, lambda i: self.chat_post("m-broken"))
        self.assertCounts(statuses(res), {200: 8}, "%s: after the repair" % what)
        self.assertEqual(self.up.count(), before + 8)
        return self.status_entry(self.aid)

    def assertNoCrash(self, pids_before, what):
        # every process serving before still does (mod_fcgid may start more
        # during a burst, up to max_procs; a crashed one would be gone)
        gone = sorted(set(pids_before) - set(self.pids()))
        self.assertEqual(gone, [], "%s: responder processes gone (a crash?): before %s, now %s"
                         % (what, pids_before, self.pids()))

    # -- cases, in any order on the same gateway (test_a on one of its own)
    def test_a_folder_missing_at_start(self):
        # Started now, without the folder: the shared gateway's may have been
        # made already for a case that ran before.
        self.gw = Gateway(th.boot_config(), name="st-broken-start", **self.gateway_kwargs)
        self.addCleanup(self.gw.stop)
        self.gw.start()
        self.log_offset = 0
        self.configure([self.api(self.aid, self.up.url, ["m-broken"])])
        self.assertFalse(os.path.exists(self.state_dir))
        pids = self.pids()
        self.expect_broken("state folder missing at start", self.state_dir)
        os.mkdir(self.state_dir, 0o755)
        self.give(self.state_dir)
        st = self.expect_working("state folder created")
        self.assertEqual(st["usage"]["rpd"], 8, st)
        self.assertTrue(os.path.exists(self.gw.state_path))
        mode = os.stat(self.gw.state_path).st_mode & 0o777
        self.assertEqual(mode, 0o600, "state file mode %o (doc/behaviour.md, Limits and state: 0600)" % mode)
        self.assertNoCrash(pids, "folder missing")

    def test_b_folder_moved_away(self):
        rpd = self.status_entry(self.aid)["usage"]["rpd"]
        pids = self.pids()
        moved = self.state_dir + ".moved"
        os.rename(self.state_dir, moved)
        try:
            self.expect_broken("state folder gone", self.state_dir)
        finally:
            os.rename(moved, self.state_dir)
        st = self.expect_working("state folder back")
        self.assertEqual(st["usage"]["rpd"], rpd + 8, "counts kept: %s" % st)
        self.assertNoCrash(pids, "folder moved away")

    def test_c_file_not_writable(self):
        if not self.unprivileged:
            self.skipTest("running as root without a 'nobody' user: file modes do not bind")
        uid = proc_uid(self.pids()[0])
        self.assertNotEqual(uid, 0, "the responder runs as root; file modes would not count")
        pids = self.pids()
        os.chmod(self.gw.state_path, 0o400)
        try:
            self.expect_broken("state file read-only", self.gw.state_path)
        finally:
            os.chmod(self.gw.state_path, 0o600)
        self.expect_working("state file writable again")
        self.assertNoCrash(pids, "not writable")

    def test_d_locked_too_long(self):
        lock_path = self.gw.state_path + ".lock"
        pids = self.pids()
        before = self.up.count()
        holder = hold_lock(lock_path)
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            health = {}
            ht = threading.Thread(target=lambda: health.update(
                r=self.gw.request("GET", "/health", timeout=20)))
            ht.start()
            r = self.chat_post("m-broken", timeout=20)
            ht.join(20)
            self.assertErrorShape(r, 503)
            self.assertTrue(2.5 <= r.elapsed <= 4.8,
                            "answer after %.2fs while the lock was held (want about 3 s)"
                            % r.elapsed)
            self.assertStatus(health["r"], 503)
            self.assertEqual(self.up.count(), before)
            def wanted(l):
                return "state file" in l and lock_path in l
            lines = [l for l in self.log_lines(want=wanted) if wanted(l)]
            self.assertTrue(lines, "no log line naming the lock file:\n"
                            + "\n".join(self.log_lines()[-10:]))
            note("locked: " + lines[-1].split(": ", 1)[-1])
        finally:
            release_lock(holder)
        self.expect_working("lock released")
        self.assertNoCrash(pids, "locked")

    def test_e_not_a_gdbm_file(self):
        rpd = self.status_entry(self.aid)["usage"]["rpd"]
        pids = self.pids()
        backup = self.gw.state_path + ".bak"
        shutil.copy2(self.gw.state_path, backup)
        try:
            with open(self.gw.state_path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                f.write((b"this is not a GDBM file\n" * (size // 24 + 1))[:size])
            self.expect_broken("garbage state file", self.gw.state_path)
        finally:
            shutil.copy2(backup, self.gw.state_path)
            self.give(self.gw.state_path)
        st = self.expect_working("good state file restored")
        self.assertEqual(st["usage"]["rpd"], rpd + 8, "counts of the restored file: %s" % st)
        self.assertNoCrash(pids, "not a GDBM file")

    def test_f_empty_state_file(self):
        """A file of 0 bytes (a crashed copy, a full disk): refused like garbage
        or written anew from the live copy, but never a crash or a forwarded request
        without a count."""
        pids = self.pids()
        rpd = self.status_entry(self.aid)["usage"]["rpd"]
        backup = self.gw.state_path + ".bak"
        shutil.copy2(self.gw.state_path, backup)
        try:
            with open(self.gw.state_path, "r+b") as f:
                f.truncate(0)
            r = self.gw.request("GET", "/health")
            if r.status == 200:
                # The GDBM store's live copy (in the lock file) still has every
                # count and is written into the emptied file: nothing is lost.
                note("an empty state file is written anew from the live copy")
                before = self.up.count()
                self.assertStatus(self.chat_post("m-broken"), 200)
                self.assertEqual(self.status_entry(self.aid)["usage"]["rpd"], rpd + 1)
                self.assertEqual(self.up.count(), before + 1)
            else:
                self.expect_broken("empty state file", self.gw.state_path)
        finally:
            shutil.copy2(backup, self.gw.state_path)
            self.give(self.gw.state_path)
        self.expect_working("good state file restored")
        self.assertNoCrash(pids, "empty file")

    def test_g_folder_recreated_shares_lock(self):
        """The folder deleted and created again (new state file and lock file): the
        responders must lock the new lock file, as a process started now does;
        otherwise old and new processes write the database without excluding each
        other."""
        pids = self.pids()
        shutil.rmtree(self.state_dir)
        self.expect_broken("state folder deleted", self.state_dir, n=2)
        os.mkdir(self.state_dir, 0o755)
        self.give(self.state_dir)
        self.expect_working("state folder created again")
        lock_path = self.gw.state_path + ".lock"
        self.assertTrue(os.path.exists(lock_path))
        holder = hold_lock(lock_path)
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            before = self.up.count()
            r = self.chat_post("m-broken", timeout=20)
            stale = stale_lock_fds(self.pids(), lock_path)
            self.assertEqual(r.status, 503,
                             "a request went through while another process held the new "
                             "%s: the responders still lock the deleted lock file they opened "
                             "before (open descriptors: %s), while a responder started now "
                             "(or --status) locks the new one, so the two do not exclude each "
                             "other%s" % (lock_path, stale, self.diag(r)))
            self.assertEqual(self.up.count(), before)
        finally:
            release_lock(holder)
        self.expect_working("lock released")
        self.assertNoCrash(pids, "folder recreated")

    def test_h_symlinked_state_file(self):
        """A state file replaced by a symbolic link (to a copy of itself) is
        refused, never followed (doc/behaviour.md, Limits and state: GDBM)."""
        pids = self.pids()
        real = self.gw.state_path + ".real"
        os.rename(self.gw.state_path, real)
        os.symlink(real, self.gw.state_path)
        try:
            self.expect_broken("state file a symbolic link", "is a symbolic link")
        finally:
            os.unlink(self.gw.state_path)
            os.rename(real, self.gw.state_path)
        self.expect_working("state file back")
        self.assertNoCrash(pids, "symbolic link")

    def test_i_state_file_of_another_user(self):
        """A state file of another user than the responder's is refused."""
        if not self.unprivileged or os.geteuid() != 0:
            self.skipTest("needs root to give the file to another user than the responder's")
        pids = self.pids()
        # The responder could open it (its group may write), so only the
        # owner check stands in the way.
        uid, gid = self.gw.server_ids()
        os.chown(self.gw.state_path, 0, gid)
        os.chmod(self.gw.state_path, 0o660)
        try:
            self.expect_broken("state file of root", "owned by uid 0, not by this user")
        finally:
            os.chown(self.gw.state_path, uid, gid)
            os.chmod(self.gw.state_path, 0o600)
        self.expect_working("state file given back")
        self.assertNoCrash(pids, "another user")


def _has_group(name):
    import grp
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# ---------------------------------------------------------------------------
class S08Tokens(StateBase):
    def test_json_and_stream_usage_add_up(self):
        up = self.mock("tok", "auto", usage=(11, 7), stream_usage=(5, 3), events=2,
                       interval_ms=20)
        aid, other = self.uid("a"), self.uid("b")
        self.configure([self.api(aid, up.url, ["m-tok"]), self.api(other, up.url, ["m-oth"])])

        def one(i):
            if i % 2:
                s = self.gw.stream("POST", CHAT, body=chat("m-tok", stream=True), key=CLIENT_KEY)
                return s
            return self.chat_post("m-tok")

        res = fire_at_once(12, one)
        for r in res:
            self.assertTrue(hasattr(r, "status") and r.status == 200, str(r))
            if hasattr(r, "events"):
                self.assertTrue(any(b'"usage"' in e for _, e in r.events), r.describe())
        self.assertStatus(self.chat_post("m-oth"), 200)
        want = {"promptTokens": 6 * 11 + 6 * 5, "completionTokens": 6 * 7 + 6 * 3,
                "totalTokens": 6 * 18 + 6 * 8, "requests": 12}

        def detail():
            d = self.token_detail(aid)["detailedStats"].get(aid, {})
            return {k: d.get(k) for k in want}

        self.wait_for(lambda: detail() == want)
        j = self.token_detail(aid)
        self.assertEqual({k: j["detailedStats"][aid].get(k) for k in want}, want,
                         json.dumps(j["detailedStats"][aid]))
        self.assertEqual(j["detailedStats"][other]["totalTokens"], 18, json.dumps(j))
        summ = j["summary"]
        for sk, dk in (("totalTokens", "totalTokens"), ("totalRequests", "requests"),
                       ("totalPromptTokens", "promptTokens"),
                       ("totalCompletionTokens", "completionTokens")):
            self.assertEqual(summ.get(sk), sum(v.get(dk, 0) for v in j["detailedStats"].values()),
                             "summary.%s: %s" % (sk, json.dumps(j)))
        st = self.status_entry(aid)
        self.assertEqual(st["tokens"], {"prompt": want["promptTokens"],
                                        "completion": want["completionTokens"],
                                        "total": want["totalTokens"]}, st)
        self.assertEqual(st["usage"]["rpd"], 12, st)


# ---------------------------------------------------------------------------
@only_store("redis", "faults of a Redis server; S07 has the GDBM file's")
class S09RedisFaults(OwnGatewayBase):
    """Redis stopped or stalled mid-run: 503 answers within the timeout, a log line
    naming Redis, nothing forwarded unchecked, no crash; service back within about
    a second of Redis answering again (issue 7, point 3)."""

    def fault_lines(self, gw, offset, needle):
        def wanted(l):
            return re.search(r"\berror\b", l) and "Redis store" in l and needle in l
        lines = [l for l in self.log_lines(offset, gw, wanted) if wanted(l)]
        self.assertTrue(lines, "no error line naming the Redis store (%r) in the log:\n%s"
                        % (needle, "\n".join(self.log_lines(offset, gw)[-15:])))
        return lines

    def back_after(self, model, limit=5.0):
        """Seconds from now until a request gets 200 (polled every 50 ms)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            r = self.chat_post(model, timeout=10)
            if r.status == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        self.fail("no 200 within %.0f s of Redis answering again; last: %s" % (limit, r))

    def test_a_redis_stopped_then_started(self):
        up = self.mock("rstop")
        aid = "redis-stop-ep"
        gw = self.start_gateway([self.api(aid, up.url, ["m-rstop"], rpm=100)], "redis-stop")
        self.assertCounts(statuses(self.burst(4, "m-rstop")), {200: 4}, "Redis up")
        pids = sorted(responder_processes(gw))
        offset = gw.log_size()
        gw.redis.stop()
        res = fire_at_once(6, lambda i: self.chat_post("m-rstop"))
        for r in res:
            self.assertTrue(hasattr(r, "status"), repr(r))
            self.assertError(r, 503, "server_error", "state_unavailable")
        slowest = max(r.elapsed for r in res)
        h = gw.request("GET", "/health")
        self.assertStatus(h, 503)
        self.assertEqual(h.json().get("status"), "error", self.diag(h))
        self.assertEqual(h.json().get("reason"), "Redis store cannot be used", self.diag(h))
        self.assertEqual(up.count(), 4, "forwarded while Redis was down")
        lines = self.fault_lines(gw, offset, "redis 127.0.0.1:%d" % gw.redis.port)
        note("Redis stopped: 6 answers 503 in at most %.0f ms; %s"
             % (slowest * 1000, lines[-1].split(": ", 1)[-1]))
        gw.redis.start()
        back = self.back_after("m-rstop")
        note("Redis started again on the same port: first 200 after %.0f ms" % (back * 1000))
        self.assertLess(back, 1.5, "service not back within about a second of Redis")
        self.assertCounts(statuses(self.burst(8, "m-rstop")), {200: 8}, "after the restart")
        self.assertStatus(gw.request("GET", "/health"), 200)
        self.assertEqual(up.count(), 4 + 1 + 8)
        gone = sorted(set(pids) - set(responder_processes(gw)))
        self.assertEqual(gone, [], "responder processes gone (a crash?)")

    def test_b_redis_paused(self):
        """SIGSTOP: every answer within storeTimeoutMs (300 here) plus the
        gateway's own time, and 503; what timed out counted nothing."""
        up = self.mock("rpause")
        aid = "redis-pause-ep"
        gw = self.start_gateway([self.api(aid, up.url, ["m-rpause"], rpm=6)], "redis-pause",
                                storeTimeoutMs=300)
        self.assertEqual(statuses(self.seq(2, "m-rpause")), [200, 200])
        pids = sorted(responder_processes(gw))
        offset = gw.log_size()
        gw.redis.pause()
        try:
            t0 = time.monotonic()
            res = fire_at_once(6, lambda i: self.chat_post("m-rpause", timeout=20))
            h = gw.request("GET", "/health", timeout=20)
            took = time.monotonic() - t0
        finally:
            gw.redis.resume()
        for r in res:
            self.assertTrue(hasattr(r, "status"), repr(r))
            self.assertError(r, 503, "server_error", "state_unavailable")
        slowest = max(r.elapsed for r in res)
        self.assertStatus(h, 503)
        self.assertLess(slowest, 1.0, "answers not bounded by storeTimeoutMs (300 ms)")
        self.assertLess(h.elapsed, 1.0, "/health not bounded by storeTimeoutMs (300 ms)")
        self.assertEqual(up.count(), 2, "forwarded while Redis was stalled")
        lines = self.fault_lines(gw, offset, "no answer within 300 ms")
        note("Redis stalled (SIGSTOP): 6 answers 503 in %.0f-%.0f ms, /health %.0f ms "
             "(%.1f s in all); %s" % (min(r.elapsed for r in res) * 1000, slowest * 1000,
                                     h.elapsed * 1000, took, lines[-1].split(": ", 1)[-1]))
        back = self.back_after("m-rpause")
        note("Redis resumed (SIGCONT): first 200 after %.0f ms" % (back * 1000))
        self.assertLess(back, 1.5, "service not back within about a second of Redis")
        # 3 of the minute's 6 are used: the stalled attempts counted nothing
        self.assertEqual(statuses(self.seq(4, "m-rpause")), [200, 200, 200, 429])
        self.assertEqual(up.count(), 6)
        gone = sorted(set(pids) - set(responder_processes(gw)))
        self.assertEqual(gone, [], "responder processes gone (a crash?)")

    def seq(self, n, model):
        return [self.chat_post(model) for _ in range(n)]


# ---------------------------------------------------------------------------
@only_store("redis", "several hosts share one Redis")
class S10TwoHosts(OwnGatewayBase):
    """Two web servers with their responders, as two hosts behind a load
    balancer: separate directories, configs and state files, nothing shared
    but one Redis. The limit holds for both together (issue 7)."""

    def setUp(self):
        super().setUp()
        self.hosts = []
        self.shared = None

    def tearDown(self):
        for h in self.hosts:
            h.stop()
        if self.shared is not None:
            self.shared.close()
        super().tearDown()

    def test_two_hosts_rpm7_30_at_once(self):
        self.shared = harness.RedisServer("two-hosts").start()
        up = self.mock("two")
        aid = "two-hosts-ep"
        apis = [self.api(aid, up.url, ["m-two"], rpm=7)]
        # Host A is told by API_TOGETHER_STORE, host B by server.store in its
        # config (the harness sets no variable for a "gdbm" gateway).
        a = Gateway({"server": default_server(), "apis": apis}, name="host-a",
                    max_procs=PROCS, tz=TZ_NAME, redis=self.shared)
        self.hosts.append(a.start())
        b = Gateway({"server": default_server(store=self.shared.url), "apis": apis},
                    name="host-b", max_procs=PROCS, tz=TZ_NAME, store="gdbm")
        self.hosts.append(b.start())
        self.assertNotIn("API_TOGETHER_STORE", b.responder_env())
        self.assertNotEqual(a.dir, b.dir)
        self.assertFalse(os.path.commonpath([a.dir, b.dir]) in (a.dir, b.dir))

        def one(i):
            return (a if i % 2 else b).request("POST", CHAT, body=chat("m-two"), key=CLIENT_KEY)

        res = fire_at_once(30, one)
        sts = statuses(res)
        self.assertCounts(sts, {200: 7, 429: 23}, "rpm 7, 30 requests at once over two hosts")
        self.assertEqual(up.count(), 7, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
                self.assertRetryAfter(r, 1, 60)
        ok_a = sum(1 for i, r in enumerate(res) if i % 2 and r.status == 200)
        note("two hosts, one Redis: 30 requests (15 each) -> 7 reached the upstream "
             "(%d via host A, %d via host B), 23 answered 429" % (ok_a, 7 - ok_a))
        for gw in (a, b):
            st = self.status_entry(aid, gw)
            self.assertEqual((st["usage"]["rpm"], st["usage"]["rpd"]), (7, 7), st)
        cli = cli_status(b)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        row = cli_row(cli.stdout, aid)
        self.assertIsNotNone(row, cli.stdout)
        self.assertEqual(row[2], "7/7", cli.stdout)
        # neither host wrote a state file: the counts are in Redis only
        for gw in (a, b):
            self.assertFalse(os.path.exists(gw.state_path), gw.state_path)


# ---------------------------------------------------------------------------
GOOGLE_429 = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}
GOOGLE_PER_DAY = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
        {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}


class S11KeyPools(ClockBase):
    """apiKey as an array: each key its own RPM/RPD and state, shared by every
    process (and host); a 429/401/403 charged to the key, other 4xx to nobody.
    No case depends on which process serves: the keys of one endpoint are
    picked least recently used first, fresh ones in config order."""

    def pool(self, name, n=3, mock_kind="chat", **api):
        up = self.mock(name, mock_kind)
        keys = [new_key("sk-pool-") for _ in range(n)]
        aid = self.uid(name)
        model = "m-" + name
        return up, keys, aid, model, self.api(aid, up.url, [model], apiKey=keys, **api)

    def keys_of(self, aid):
        return self.status_entry(aid)["keys"]

    def assertKeyStates(self, aid, want):
        got = [k["state"] for k in self.keys_of(aid)]
        self.assertEqual(got, want, self.status_entry(aid))

    def test_a_three_keys_rpm2_ten_at_once(self):
        up, keys, aid, model, api = self.pool("rpm2", rpm=2)
        self.configure([api])
        sts = statuses(self.burst(10, model))
        self.assertCounts(sts, {200: 6, 429: 4}, "3 keys of rpm 2, 10 requests at once")
        used = collections.Counter(up.keys())
        self.assertEqual(dict(used), {k: 2 for k in keys}, "requests per key")
        st = self.status_entry(aid)
        self.assertEqual(st["usage"]["rpm"], 6, st)
        self.assertEqual([k["usage"]["rpm"] for k in st["keys"]], [2, 2, 2], st)
        self.assertEqual([k["key"] for k in st["keys"]], ["\u2026" + k[-4:] for k in keys])

    def cooling_case(self, name, answer, advance):
        up, keys, aid, model, api = self.pool(name, rpm=100)
        other = self.mock(name + "-other")
        oid = self.uid(name + "-other")
        self.configure([dict(api, weight=th.FIRST),
                        self.api(oid, other.url, [model], weight=th.LAST)])
        up.set_key(keys[0], "status", **answer)
        # the first key is the least recently used: tried first, 429, then
        # a sibling of the same endpoint serves
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(up.keys(), [keys[0], keys[1]])
        st = self.status_entry(aid)
        self.assertEqual(st["errorCount"], 0, st)
        self.assertIs(st["available"], True, st)
        self.assertEqual(st["keys"][0]["state"], "cooling", st)
        self.assertIsNotNone(st["keys"][0]["until"], st)
        self.assertEqual([k["state"] for k in st["keys"][1:]], ["active", "active"], st)
        # the siblings serve at once, the cooling key is left alone
        self.assertCounts(statuses(self.burst(6, model)), {200: 6}, "siblings")
        self.assertNotIn(keys[0], up.keys()[2:])
        self.assertEqual(other.count(), 0, "the other endpoint was needed")
        up.set_key(keys[0], None)
        self.gw.advance_clock(advance)
        self.assertKeyStates(aid, ["active"] * 3)
        # least recently used: the cooled key serves next
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(up.keys()[-1], keys[0])
        self.assertEqual(self.status_entry(aid)["errorCount"], 0)

    def test_b_429_retry_after_cools_only_that_key(self):
        self.cooling_case("ra", {"status": 429, "body": {"error": {"message": "slow"}},
                                 "headers": {"Retry-After": "2"}}, 2.5)

    def test_c_429_google_retry_delay(self):
        self.cooling_case("gdelay", {"status": 429, "body": GOOGLE_429}, 17.5)

    def test_d_daily_quota_until_local_midnight(self):
        up, keys, aid, model, api = self.pool("perday", n=2, rpm=100)
        self.configure([api])
        up.set_key(keys[0], "status", status=429, body=GOOGLE_PER_DAY)
        self.assertStatus(self.chat_post(model), 200)
        st = self.status_entry(aid)
        self.assertEqual(st["keys"][0]["state"], "exhausted", st)
        self.assertEqual(st["errorCount"], 0, st)
        up.set_key(keys[0], None)
        # an hour on, still out; past local midnight, back
        self.gw.advance_clock(min(3600, seconds_to_local_midnight(self.gw.clock_now()) - 5))
        self.assertCounts(statuses([self.chat_post(model) for _ in range(3)]), {200: 3}, "")
        self.assertEqual(up.keys().count(keys[0]), 1, "the exhausted key served")
        self.assertKeyStates(aid, ["exhausted", "active"])
        self.gw.advance_clock(seconds_to_local_midnight(self.gw.clock_now()) + 2)
        self.assertKeyStates(aid, ["active", "active"])
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(up.keys()[-1], keys[0])

    def test_e_401_rejects_the_key_a_recheck_brings_it_back(self):
        up, keys, aid, model, api = self.pool("rej", rpm=100)
        self.configure([api], recheckMinutes=1)
        up.set_key(keys[0], "status", status=401, body={"error": {"message": "bad key"}})
        # a 401, then the second opinion (another key) answers 200: the key's fault
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(up.keys(), [keys[0], keys[1]])
        st = self.status_entry(aid)
        self.assertEqual(st["keys"][0]["state"], "rejected", st)
        self.assertEqual(st["keys"][0]["reason"], "rejected by the upstream (401)", st)
        self.assertEqual(st["errorCount"], 0, st)
        self.assertCounts(statuses(self.burst(6, model)), {200: 6}, "the others serve")
        self.assertNotIn(keys[0], up.keys()[2:])
        # the recheck: GET on the models path with that key, once due
        up.set_key(keys[0], None)
        self.gw.advance_clock(61)
        n = up.count()
        self.assertStatus(self.chat_post(model), 200)
        rechecks = [r for r in up.requests[n:] if r.method == "GET"]
        self.assertEqual([(r.path, r.key) for r in rechecks], [("/v1/models", keys[0])])
        self.assertKeyStates(aid, ["active"] * 3)

    def test_f_400_and_404_charge_nobody(self):
        up, keys, aid, model, api = self.pool("c4xx", n=2)
        other = self.mock("c4xx-other")
        oid = self.uid("c4xx-other")
        self.configure([dict(api, weight=th.FIRST),
                        self.api(oid, other.url, [model], weight=th.LAST)],
                       cooldown={"failures": 3, "seconds": 600})
        for status in (400, 404):
            up.set("status", status=status, body={"error": {"message": "no %d" % status}})
            self.assertCounts(statuses(self.burst(20, model)), {status: 20}, str(status))
        self.assertEqual(up.count(), 40, "each reached the upstream once, not retried")
        self.assertEqual(other.count(), 0)
        for a in (aid, oid):
            st = self.status_entry(a)
            self.assertEqual(st["errorCount"], 0, st)
            self.assertIs(st["available"], True, st)
            self.assertEqual({k["state"] for k in st["keys"]}, {"active"}, st)

    def test_g_a_client_cannot_cool_the_pool_with_403s(self):
        """The attack of issue 13: a path the upstream answers 403 for any key."""
        ups, apis, ids = [], [], []
        for i in range(3):
            up, keys, aid, model, api = self.pool("atk%d" % i, n=2, rpm=100)
            up.set("status", status=403, body={"error": {"message": "forbidden"}})
            ups.append(up)
            apis.append(dict(api, models=["m-atk"]))
            ids.append(aid)
        # By default the path is not forwarded at all (issue 13 point 3).
        self.configure(apis, cooldown={"failures": 3, "seconds": 600})
        r = self.get("/v1/organization/users")
        self.assertError(r, 404, "invalid_request_error", "not_forwarded")
        self.assertEqual(sum(u.count() for u in ups), 0)
        # Forwarded: every key answers 403, and none is charged.
        self.configure(apis, forwardPaths=["*"], cooldown={"failures": 3, "seconds": 600})
        for i in range(3):
            n = [u.count() for u in ups]
            r = self.get("/v1/organization/users")
            self.assertStatus(r, 403)
            reached = sum(u.count() for u in ups) - sum(n)
            self.assertLessEqual(reached, 2, "request %d reached %d keys" % (i, reached))
            self.assertGreaterEqual(reached, 1)
        for aid in ids:
            st = self.status_entry(aid)
            self.assertEqual(st["errorCount"], 0, st)
            self.assertIs(st["available"], True, st)
            self.assertEqual({k["state"] for k in st["keys"]}, {"active"}, st)
        for u in ups:
            u.set("chat")
        self.assertStatus(self.chat_post("m-atk"), 200)

    def test_i_the_gateways_own_refusal_names_why(self):
        """Point 4: Retry-After is when the first key frees, the message says why."""
        # cooling: the only key got a 429 with Retry-After 5
        up, keys, aid, model, api = self.pool("why-rl", n=1, rpm=100)
        up.set("status", status=429, body={"error": {"message": "slow"}},
               headers={"Retry-After": "5"})
        self.configure([api])
        r = self.chat_post(model)
        self.assertStatus(r, 429)
        self.assertEqual(r.header("retry-after"), "5", self.diag(r))  # the upstream's own
        r = self.chat_post(model)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 1, 5)
        self.assertIn("rate limited", r.json()["error"]["message"])
        self.assertEqual(up.count(), 1, "a cooling key was tried")
        # exhausted: until local midnight
        up2, keys2, aid2, model2, api2 = self.pool("why-day", n=2, rpm=100)
        up2.set("status", status=429, body={"error": {"code": "insufficient_quota"}})
        self.configure([api2])
        self.assertStatus(self.chat_post(model2), 429)  # both keys tried
        self.assertEqual(up2.keys(), keys2)
        r = self.chat_post(model2)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertIn("exhausted", r.json()["error"]["message"])
        to_midnight = seconds_to_local_midnight(self.gw.clock_now())
        self.assertRetryAfter(r, int(to_midnight) - 15, int(to_midnight) + 2)
        self.assertKeyStates(aid2, ["exhausted", "exhausted"])
        # rejected: each key's 401 confirmed by a 200 of the next key tried
        up3, keys3, aid3, model3, api3 = self.pool("why-401", n=2, rpm=100)
        good = self.mock("why-401-good")
        good_api = self.api(self.uid("why-401-good"), good.url, [model3], weight=th.LAST)
        self.configure([dict(api3, weight=th.FIRST), good_api])
        up3.set_key(keys3[0], "status", status=401, body={"error": {"message": "revoked"}})
        self.assertStatus(self.chat_post(model3), 200)  # keys3[0] 401, keys3[1] 200
        up3.set_key(keys3[1], "status", status=401, body={"error": {"message": "revoked"}})
        self.assertStatus(self.chat_post(model3), 200)  # keys3[1] 401, the other endpoint 200
        self.assertEqual(up3.keys(), [keys3[0], keys3[1], keys3[1]])
        self.assertEqual(good.count(), 1)
        self.assertKeyStates(aid3, ["rejected", "rejected"])
        # the pool alone (its keys' state kept across the reload): 503, rejected
        self.configure([api3])
        r = self.chat_post(model3)
        self.assertError(r, 503, "service_unavailable", "no_available_api")
        self.assertIn("rejected", r.json()["error"]["message"])
        self.assertRetryAfter(r, 1700, 1800)
        self.assertEqual(up3.count(), 3)

    def test_j_a_dead_host_cools_the_whole_pool(self):
        """An endpoint's own failure is charged to each of its keys: after
        cooldown.failures of them the pool is out, whichever key was tried."""
        keys = [new_key("sk-pool-") for _ in range(3)]
        dead = self.uid("dead-pool")
        good = self.mock("dead-pool-good")
        model = "m-dead-pool"
        self.configure([self.api(dead, "http://127.0.0.1:%d" % th.closed_port(), [model],
                                 apiKey=keys, weight=th.FIRST),
                        self.api(self.uid("dead-pool-good"), good.url, [model],
                                 weight=th.LAST)],
                       cooldown={"failures": 3, "seconds": 600})
        for i in range(3):
            self.assertStatus(self.chat_post(model), 200)
            st = self.status_entry(dead)
            self.assertEqual(st["errorCount"], i + 1, st)
        st = self.status_entry(dead)
        self.assertIs(st["temporarilyDisabled"], True, st)
        self.assertIs(st["available"], False, st)
        self.assertEqual([k["state"] for k in st["keys"]], ["cooling"] * 3, st)
        self.assertEqual({k["reason"] for k in st["keys"]}, {"failures in a row"}, st)
        self.assertEqual(good.count(), 3)
        # the pool is skipped now: the next request goes straight to the other
        offset = self.gw.log_size()
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(good.count(), 4)
        line = [l for l in self.log_lines(offset, want=lambda l: "model=%s" % model in l)
                if "model=%s" % model in l][0]
        self.assertIn("attempts=1", line)
        # after the cooldown every key is back
        self.gw.advance_clock(601)
        self.assertEqual([k["state"] for k in self.keys_of(dead)], ["active"] * 3)

    def test_k_tokens_of_a_pool_add_up_and_reset_together(self):
        up, keys, aid, model, api = self.pool("tok", rpm=100)
        up.set("chat", usage=(11, 7))
        self.configure([api])
        for _ in range(4):
            self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(collections.Counter(up.keys()), {keys[0]: 2, keys[1]: 1, keys[2]: 1})
        d = self.token_detail(aid)["detailedStats"][aid]
        self.assertEqual((d["promptTokens"], d["completionTokens"], d["totalTokens"],
                          d["requests"]), (44, 28, 72, 4), d)
        st = self.status_entry(aid)
        self.assertEqual(st["tokens"], {"prompt": 44, "completion": 28, "total": 72}, st)
        r = self.post("/v1/token/reset", {"apiId": aid})
        self.assertStatus(r, 200)
        d = self.token_detail(aid)["detailedStats"][aid]
        self.assertEqual((d["totalTokens"], d["requests"]), (0, 0), d)
        st = self.status_entry(aid)
        self.assertEqual(st["tokensToday"]["total"], 72, st)  # the day's stay
        self.assertEqual(st["usage"]["rpd"], 4, st)

    def test_h_keys_show_only_their_last_four(self):
        up, keys, aid, model, api = self.pool("secret", rpm=100)
        self.configure([api])
        up.set_key(keys[1], "status", status=401, body={"error": {"message": "bad"}})
        for _ in range(4):
            self.assertStatus(self.chat_post(model), 200)
        texts = [self.gw.request("GET", "/v1/status", key=CLIENT_KEY).body.decode(),
                 self.gw.request("GET", "/metrics", key=CLIENT_KEY).body.decode(),
                 self.gw.request("GET", "/status", key=None).body.decode("utf-8", "replace"),
                 self.gw.log_since(0)]
        for k in keys:
            for t in texts:
                self.assertFalse(th.leaked(t, k), "key %s...%s shown" % (k[:6], k[-4:]))
        metrics = texts[1]
        self.assertIn('api_together_key_state{endpoint="%s",key="\u2026%s",state="rejected"} 1'
                      % (aid, keys[1][-4:]), metrics)
        out = cli_status(self.gw).stdout
        self.assertIn("\u2026" + keys[1][-4:], out)
        self.assertIn("rejected", out)
        for k in keys:
            self.assertFalse(th.leaked(out, k))


# ---------------------------------------------------------------------------
class S12PriorityTiers(ClockBase):
    """apis[].priority (issue 15): the highest tier with room serves; a retry
    stays in its tier while it has an untried endpoint, then moves down
    (doc/behaviour.md, Forwarding: priority tiers). The weights point the
    other way (the lower tier FIRST), so a pick that ignored the tiers would
    go down at once; which process serves does not matter."""

    def tiers(self, name, hi_rpm=2, **server):
        hi = self.mock(name + "-hi")
        lo = self.mock(name + "-lo")
        model = "m-" + name
        keys = [new_key("sk-tier-") for _ in range(2)]
        self.configure([self.api(self.uid(name + "-lo"), lo.url, [model], weight=th.FIRST),
                        self.api(self.uid(name + "-hi"), hi.url, [model], rpm=hi_rpm,
                                 apiKey=keys, priority=10, weight=th.LAST)], **server)
        return hi, lo, model

    def test_a_the_higher_tier_until_its_keys_are_at_rpm_then_back(self):
        hi, lo, model = self.tiers("back")
        # two keys of rpm 2: four requests, each to the higher tier
        self.assertEqual(statuses(self.seq(4, model)), [200] * 4)
        self.assertEqual((hi.count(), lo.count()), (4, 0), "with room, the higher tier")
        # its keys at rpm: the lower tier
        self.assertEqual(statuses(self.seq(3, model)), [200] * 3)
        self.assertEqual((hi.count(), lo.count()), (4, 3), "at rpm, the lower tier")
        # the window passed: back to the higher tier
        self.gw.advance_clock(61)
        self.assertEqual(statuses(self.seq(4, model)), [200] * 4)
        self.assertEqual((hi.count(), lo.count()), (8, 3), "freed, the higher tier again")
        self.assertEqual(statuses(self.seq(1, model)), [200])
        self.assertEqual((hi.count(), lo.count()), (8, 4))

    def test_b_at_once_the_higher_tier_takes_exactly_its_room(self):
        hi, lo, model = self.tiers("burst")
        sts = statuses(self.burst(10, model))
        self.assertCounts(sts, {200: 10}, "10 at once over two tiers")
        self.assertEqual((hi.count(), lo.count()), (4, 6),
                         "the higher tier's 4 slots, the rest below")

    def test_c_a_retry_stays_in_the_tier_then_moves_down(self):
        first = self.mock("stay-first", "status", status=500, body={"error": {"message": "x"}})
        second = self.mock("stay-second")
        lo = self.mock("stay-lo")
        model = "m-stay"
        self.configure([self.api(self.uid("lo"), lo.url, [model], weight=th.FIRST),
                        self.api(self.uid("first"), first.url, [model], priority=1,
                                 weight=th.FIRST),
                        self.api(self.uid("second"), second.url, [model], priority=1,
                                 weight=th.LAST)])
        # the first of the tier fails: the other of the tier, not the one below
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual((first.count(), second.count(), lo.count()), (1, 1, 0))
        # the whole tier fails: then the one below
        second.set("status", status=503, body={"error": {"message": "y"}})
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual((first.count(), second.count(), lo.count()), (2, 2, 1))


class S13Fallbacks(ClockBase):
    """server.fallbacks (issue 15): another model when one cannot be served,
    the answer naming the model in X-Api-Together-Model (doc/behaviour.md,
    Forwarding: fallbacks)."""

    def models(self, name, big_kind="status", fallbacks=True, **big):
        big_up = self.mock(name + "-big", big_kind, **big)
        small_up = self.mock(name + "-small")
        third_up = self.mock(name + "-third")
        m_big, m_small, m_third = "m-%s-big" % name, "m-%s-small" % name, "m-%s-third" % name
        server = {}
        if fallbacks:
            # the fallback's own fallback is not followed from m_big
            server["fallbacks"] = {m_big: [m_small], m_small: [m_third]}
        self.configure([self.api(self.uid("big"), big_up.url, [m_big]),
                        self.api(self.uid("small"), small_up.url, ["upstream-small"],
                                 modelMapping={m_small: "upstream-small"}),
                        self.api(self.uid("third"), third_up.url, [m_third])], **server)
        return big_up, small_up, third_up, m_big, m_small

    def test_a_a_500_falls_back_and_the_answer_names_the_model(self):
        offset = self.gw.log_size()
        big, small, third, m_big, m_small = self.models(
            "fb500", status=500, body={"error": {"message": "down"}})
        r = self.chat_post(m_big)
        self.assertStatus(r, 200)
        self.assertEqual(r.header_all("X-Api-Together-Model"), [m_small], self.diag(r))
        self.assertEqual(r.json()["model"], "upstream-small", "rewritten as mapping does")
        self.assertEqual((big.count(), small.count(), third.count()), (1, 1, 0))
        self.assertEqual(small.requests[0].json()["model"], "upstream-small")
        self.log_lines(offset, want=lambda l: "model=%s fallback=%s tried=" % (m_big, m_small)
                       in l and "status=200 attempts=2" in l)
        # a stream from the fallback names it too
        small.set("stream", events=2, interval_ms=0)
        s = self.gw.stream("POST", CHAT, key=CLIENT_KEY, body=chat(m_big, stream=True))
        self.assertEqual(s.status, 200, s.describe())
        self.assertEqual(s.header("X-Api-Together-Model"), m_small, s.describe())
        self.assertEqual(s.events[-1][1], b"[DONE]", s.describe())
        self.assertEqual((big.count(), small.count(), third.count()), (2, 2, 0))
        # the fallback fails too: its own fallback is not followed; the
        # client gets the last answer held, naming the model it came from
        small.set("status", status=503, body={"error": {"message": "also down"}})
        r = self.chat_post(m_big)
        self.assertStatus(r, 503)
        self.assertEqual(r.header_all("X-Api-Together-Model"), [m_small], self.diag(r))
        self.assertEqual((big.count(), small.count(), third.count()), (3, 3, 0))

    def test_b_without_fallbacks_the_answer_held_or_502(self):
        big, small, third, m_big, m_small = self.models(
            "nofb", fallbacks=False, status=500, body={"error": {"message": "down"}})
        r = self.chat_post(m_big)
        self.assertStatus(r, 500)
        self.assertIsNone(r.header("X-Api-Together-Model"), self.diag(r))
        big.set("close")
        r = self.chat_post(m_big)
        self.assertError(r, 502, "bad_gateway", "upstream_unreachable")
        self.assertIsNone(r.header("X-Api-Together-Model"), self.diag(r))
        self.assertEqual(small.count(), 0)
        # no answer at all, with fallbacks: the fallback serves
        self.models("nofb2", big_kind="close")
        r = self.chat_post("m-nofb2-big")
        self.assertStatus(r, 200)
        self.assertEqual(r.header("X-Api-Together-Model"), "m-nofb2-small", self.diag(r))

    def test_c_a_400_is_passed_on_with_no_fallback(self):
        big, small, third, m_big, m_small = self.models(
            "fb400", status=400, body={"error": {"message": "bad request"}},
            headers={"X-Api-Together-Model": "spoofed"})
        r = self.chat_post(m_big)
        self.assertStatus(r, 400)
        self.assertEqual(r.json()["error"]["message"], "bad request")
        # the model asked for has fallbacks: the answer names the model that
        # answered (the upstream's own header replaced)
        self.assertEqual(r.header_all("X-Api-Together-Model"), [m_big], self.diag(r))
        self.assertEqual((big.count(), small.count()), (1, 0))

    def test_d_no_room_falls_back_retry_after_the_smallest_of_all(self):
        big_up = self.mock("room-big")
        small_up = self.mock("room-small")
        m_big, m_small = "m-room-big", "m-room-small"
        self.configure([self.api(self.uid("big"), big_up.url, [m_big], rpm=1),
                        self.api(self.uid("small"), small_up.url, [m_small], rpm=1)],
                       fallbacks={m_big: [m_small]})
        r = self.chat_post(m_big)
        self.assertStatus(r, 200)
        self.assertEqual(r.header("X-Api-Together-Model"), m_big)
        self.gw.advance_clock(20)
        # the model at its rpm: the fallback serves
        r = self.chat_post(m_big)
        self.assertStatus(r, 200)
        self.assertEqual(r.header("X-Api-Together-Model"), m_small)
        self.assertEqual((big_up.count(), small_up.count()), (1, 1))
        # both at rpm: 429, Retry-After when the first frees (the model
        # asked for, 40 s; its fallback 60 s)
        r = self.chat_post(m_big)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 40, 40)
        self.assertIsNone(r.header("X-Api-Together-Model"), self.diag(r))
        # asked for directly, the fallback has no fallbacks of its own
        r = self.chat_post(m_small)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 60, 60)
        self.gw.advance_clock(41)
        r = self.chat_post(m_big)
        self.assertStatus(r, 200)
        self.assertEqual(r.header("X-Api-Together-Model"), m_big)
        self.assertEqual((big_up.count(), small_up.count()), (2, 1))




def chat_of_estimate(model, estimate):
    """A chat body whose token estimate (doc/behaviour.md, Limits and state,
    rule 22: its bytes / 4 plus max_tokens) is estimate."""
    mt = estimate
    for _ in range(10):
        body = chat(model, max_tokens=mt)
        mt = estimate - len(json.dumps(body)) // 4
    body = chat(model, max_tokens=mt)
    assert len(json.dumps(body)) // 4 + mt == estimate, body
    return body


class S14TokenLimits(ClockBase):
    """tpm and tpd (issue 14; doc/behaviour.md, Limits and state, Token limits):
    an estimate reserved with the attempt, in the same atomic step, across
    every process; the answer's total replaces it. The clock stands still
    until the test moves it."""

    def tok_post(self, model, estimate=300):
        return self.post(CHAT, chat_of_estimate(model, estimate))

    def test_a_tpm1000_estimates_300_ten_at_once(self):
        # Through each process's own socket in turn, as S01: every process
        # takes part. The answers report 300, as estimated: however the
        # server queues the requests (mod_fcgid's processes serve one at a
        # time), an answer frees nothing, so exactly 3 of 10 go.
        socks = [v for _, v in sorted(self.process_sockets().items())]
        up = self.mock("tpm", "chat", usage=(100, 200))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-tpm"], tpm=1000)])

        def one(i):
            return harness.fastcgi_request(socks[i % len(socks)], "POST", self.gw.url_path(CHAT),
                                           body=chat_of_estimate("m-tpm", 300), key=CLIENT_KEY)

        res = fire_at_once(10, one)
        self.assertCounts(statuses(res), {200: 3, 429: 7}, "tpm 1000, 10 x 300 at once")
        self.assertEqual(up.count(), 3, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
                self.assertRetryAfter(r, 55, 61)
        st = self.status_entry(aid)
        self.assertEqual(st["limits"]["tpm"], 1000, st)
        self.assertEqual(st["limits"]["tpd"], -1, st)
        self.assertEqual((st["usage"]["tpm"], st["usage"]["tpd"]), (900, 900), st)
        self.assertIn("dayResetsAt", st)
        # A minute later the answers say 50 each: three of them leave 850,
        # not 100, for the estimates (rule 24): 2 of 10 at once go.
        self.gw.advance_clock(61)
        up.set("chat", usage=(20, 30))
        self.assertCounts(statuses([self.tok_post("m-tpm") for _ in range(3)]), {200: 3},
                          "3 answers of 50")
        self.assertEqual(self.status_entry(aid)["usage"]["tpm"], 150)
        up.set("chat", usage=(100, 200))
        res = fire_at_once(10, one)
        self.assertCounts(statuses(res), {200: 2, 429: 8}, "after answers of 50")
        self.assertEqual(up.count(), 8)
        self.assertEqual(self.status_entry(aid)["usage"]["tpm"], 750)
        metrics = self.gw.request("GET", "/metrics", key=CLIENT_KEY).body.decode()
        self.assertIn('api_together_tpm_used{endpoint="%s"} 750' % aid, metrics)
        self.assertIn('api_together_tpm_limit{endpoint="%s"} 1000' % aid, metrics)

    def test_b_the_window_slides(self):
        up = self.mock("tpmw", "chat", usage=(100, 200))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-tpmw"], tpm=1000)])
        # t: three answers of 300 fill 900; a fourth estimate of 300 waits.
        self.assertCounts(statuses([self.tok_post("m-tpmw") for _ in range(3)]),
                          {200: 3}, "3 at t")
        r = self.tok_post("m-tpmw")
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 55, 61)
        # t+30: the same; t+61: the 900 of t left the window.
        self.gw.advance_clock(30)
        r = self.tok_post("m-tpmw")
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 25, 31)
        self.gw.advance_clock(31)
        self.assertEqual(self.status_entry(aid)["usage"]["tpm"], 0)
        self.assertCounts(statuses(fire_at_once(10, lambda i: self.tok_post("m-tpmw"))),
                          {200: 3, 429: 7}, "10 at once at t+61")
        self.assertEqual(up.count(), 6)

    def test_c_tpd_rolls_over_at_local_midnight(self):
        up = self.mock("tpd", "chat", usage=(100, 100))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-tpd"], tpd=500)])
        now = datetime.datetime.fromtimestamp(self.gw.clock_now(), LOCAL_TZ)
        target = now.replace(hour=23, minute=59, second=50, microsecond=0)
        if target - now < datetime.timedelta(seconds=1):
            target += datetime.timedelta(days=1)
        self.gw.advance_clock((target - now).total_seconds())
        # An empty day admits any one estimate (rule 25); 200 + 300 fits 500.
        self.assertStatus(self.tok_post("m-tpd", 600), 200)
        self.assertStatus(self.tok_post("m-tpd"), 200)
        r = self.tok_post("m-tpd", 101)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 1, 11)
        st = self.status_entry(aid)
        self.assertEqual((st["limits"]["tpd"], st["usage"]["tpd"]), (500, 400), st)
        # 00:00:02 local: a new day.
        self.gw.advance_clock(12)
        self.assertEqual(self.status_entry(aid)["usage"]["tpd"], 0)
        self.assertStatus(self.tok_post("m-tpd"), 200)
        self.assertEqual(up.count(), 3)

    def test_d_tpm_0_is_out_of_service(self):
        up = self.mock("tpm0", "chat")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-tpm0"], tpm=0)])
        r = self.tok_post("m-tpm0")
        self.assertStatus(r, 404)
        st = self.status_entry(aid)
        self.assertIs(st["available"], False, st)
        self.assertEqual(up.count(), 0)

    # -- Streams without usage (issue 14 point 5; doc/behaviour.md,
    # Forwarding: a stream's usage)

    def stream_raw(self, model, **extra):
        return json.dumps(chat(model, stream=True, **extra)).encode()

    @staticmethod
    def without_usage_event(sent):
        """The mock's stream minus its usage-only event, byte for byte."""
        events = sent.split(b"\n\n")
        assert events[-1] == b"", sent
        return b"".join(e + b"\n\n" for e in events[:-1] if b'"choices": []' not in e)

    def test_e_stream_usage_asked_and_removed(self):
        up = self.mock("su", "stream", events=3, interval_ms=0, usage=(40, 60),
                       usage_chunk=True)
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-su"], tpm=100000)])
        raw = self.stream_raw("m-su")
        r = self.post(CHAT, raw)
        self.assertStatus(r, 200)
        got = up.requests[-1].body
        self.assertEqual(got, b'{"stream_options":{"include_usage":true},' + raw[1:])
        sent = up.streams[-1]["body"]
        self.assertIn(b'"choices": [], "usage"', sent)
        self.assertEqual(r.body, self.without_usage_event(sent))
        self.assertNotIn(b'"usage"', r.body)
        # Counted from the answer's usage, not the estimate.
        st = self.status_entry(aid)
        self.assertEqual((st["usage"]["tpm"], st["tokens"]["total"]), (100, 100), st)
        self.assertEqual(st["streamTokens"], "usage", st)
        self.assertEqual(st["estimatedAnswers"], 0, st)

    def test_f_stream_usage_the_client_asked_for(self):
        up = self.mock("sua", "stream", events=2, interval_ms=0, usage=(10, 15),
                       usage_chunk=True)
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-sua"], tpm=100000)])
        raw = self.stream_raw("m-sua", stream_options={"include_usage": True})
        r = self.post(CHAT, raw)
        self.assertStatus(r, 200)
        self.assertEqual(up.requests[-1].body, raw)
        self.assertEqual(r.body, up.streams[-1]["body"])
        self.assertIn(b'"choices": [], "usage"', r.body)
        self.assertEqual(self.status_entry(aid)["usage"]["tpm"], 25)

    def test_g_stream_without_token_limits_is_untouched(self):
        up = self.mock("sun", "stream", events=2, interval_ms=0, usage=(10, 15),
                       usage_chunk=True)
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-sun"], rpm=1000)])
        raw = self.stream_raw("m-sun")
        r = self.post(CHAT, raw)
        self.assertStatus(r, 200)
        self.assertEqual(up.requests[-1].body, raw)
        self.assertEqual(r.body, up.streams[-1]["body"])
        self.assertNotIn(b'"usage"', r.body)
        self.assertNotIn("streamTokens", self.status_entry(aid))

    def test_h_stream_usage_off_counts_the_estimate(self):
        up = self.mock("suo", "stream", events=2, interval_ms=0, usage=(10, 15),
                       usage_chunk=True)
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-suo"], tpm=100000, streamUsage=False)])
        raw = self.stream_raw("m-suo")
        r = self.post(CHAT, raw)
        self.assertStatus(r, 200)
        self.assertEqual(up.requests[-1].body, raw)
        self.assertEqual(r.body, up.streams[-1]["body"])
        # No usage came: the estimate is counted as its tokens (rule 24),
        # and the endpoint says so.
        st = self.status_entry(aid)
        self.assertEqual(st["usage"]["tpm"], len(raw) // 4, st)
        self.assertEqual(st["tokens"]["total"], len(raw) // 4, st)
        self.assertEqual(st["streamTokens"], "estimate", st)
        # Marked as such (issue 14 point 5): the answers counted from their
        # estimate, on the endpoint and its key, in /v1/status, /metrics and
        # --status (test_e and test_i: answers with usage are not).
        self.assertStatus(self.post(CHAT, raw), 200)
        st = self.status_entry(aid)
        self.assertEqual(st["estimatedAnswers"], 2, st)
        self.assertEqual([k["estimatedAnswers"] for k in st["keys"]], [2], st)
        self.assertEqual(st["tokens"]["total"], 2 * (len(raw) // 4), st)
        metrics = self.gw.request("GET", "/metrics", key=CLIENT_KEY).body.decode()
        self.assertIn('api_together_estimated_answers_total{endpoint="%s"} 2' % aid, metrics)
        self.assertRegex(metrics, r'api_together_key_estimated_answers_total\{endpoint="%s",'
                         r'key="[^"]*"\} 2' % re.escape(aid))
        out = cli_status(self.gw).stdout
        self.assertIn("  tokens tpm=%d/100000 tpd=%d/-1 streams=estimate estimated-answers=2"
                      % (st["usage"]["tpm"], st["usage"]["tpd"]), out)

    def test_i_a_pool_shows_each_keys_tokens(self):
        # Issue 14 point 6: per key usage.tpm and usage.tpd, in /v1/status,
        # /metrics and --status; an endpoint without a token limit shows none.
        up = self.mock("tpk", "chat", usage=(100, 200))
        plain = self.mock("tpk-plain", "chat")
        keys = [new_key("sk-pool-") for _ in range(2)]
        aid, pid = self.uid("a"), self.uid("plain")
        self.configure([self.api(aid, up.url, ["m-tpk"], apiKey=keys, tpm=10000, tpd=20000),
                        self.api(pid, plain.url, ["m-tpk-plain"])])
        self.assertCounts(statuses([self.tok_post("m-tpk") for _ in range(3)]), {200: 3},
                          "3 answers of 300")
        st = self.status_entry(aid)
        self.assertEqual((st["limits"]["tpm"], st["limits"]["tpd"]), (10000, 20000), st)
        self.assertEqual((st["usage"]["tpm"], st["usage"]["tpd"]), (900, 900), st)
        # The key used least recently serves: 2 answers, then 1.
        self.assertEqual([(k["usage"]["tpm"], k["usage"]["tpd"]) for k in st["keys"]],
                         [(600, 600), (300, 300)], st)
        self.assertEqual([k["estimatedAnswers"] for k in st["keys"]], [0, 0], st)
        plain_st = self.status_entry(pid)
        self.assertEqual(set(plain_st["keys"][0]["usage"]), {"rpm", "rpd"}, plain_st)
        self.assertNotIn("tpm", plain_st["limits"])
        self.assertNotIn("estimatedAnswers", plain_st)
        metrics = self.gw.request("GET", "/metrics", key=CLIENT_KEY).body.decode()
        for k, used in zip(keys, (600, 300)):
            for kind in ("tpm", "tpd"):
                self.assertIn('api_together_key_%s_used{endpoint="%s",key="\u2026%s"} %d'
                              % (kind, aid, k[-4:], used), metrics)
        self.assertIn('api_together_tpd_limit{endpoint="%s"} 20000' % aid, metrics)
        self.assertNotIn('api_together_tpm_limit{endpoint="%s"}' % pid, metrics)
        out = cli_status(self.gw).stdout
        self.assertIn("  tokens tpm=900/10000 tpd=900/20000 streams=usage estimated-answers=0",
                      out)
        for k, used in zip(keys, (600, 300)):
            self.assertRegex(out, r"  key \u2026%s .* tpm=%d/10000 tpd=%d/20000\n"
                             % (k[-4:], used, used))
        # The endpoint without a token limit prints as before: no such line.
        lines = out.splitlines()
        at = [i for i, l in enumerate(lines) if l.split() and l.split()[0] == pid][0]
        self.assertFalse(at + 1 < len(lines) and lines[at + 1].startswith("  "), out)


class S17ClientLimits(ClockBase):
    """A client key's own rpm (issue 15; doc/behaviour.md, Limits and state:
    client limits): counted in the same atomic step as the endpoint key's
    slot, across every process. The clock stands still until the test moves
    it."""

    def test_a_client_rpm2_five_at_once(self):
        socks = [v for _, v in sorted(self.process_sockets().items())]
        up = self.mock("cl", "chat")
        alice, bob = new_key(), new_key()
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-cl"])],
                       apiKeys=[{"key": alice, "name": "alice", "rpm": 2},
                                {"key": bob, "name": "bob", "rpm": 2}])

        def one(i, key=alice):
            return harness.fastcgi_request(socks[i % len(socks)], "POST", self.gw.url_path(CHAT),
                                           body=chat("m-cl"), key=key)

        res = fire_at_once(5, one)
        self.assertCounts(statuses(res), {200: 2, 429: 3}, "client rpm 2, 5 at once")
        self.assertEqual(up.count(), 2, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "client_rate_limited")
                self.assertRetryAfter(r, 59, 60)
        # Another client key is still served; the endpoint had room all along.
        self.assertStatus(one(0, bob), 200)
        self.assertStatus(self.chat_post("m-cl"), 200)
        self.assertEqual(up.count(), 4)
        self.assertEqual(self.status_entry(aid)["usage"]["rpm"], 4)
        # A minute later alice has room again.
        self.gw.advance_clock(61)
        self.assertStatus(one(1), 200)
        self.assertEqual(up.count(), 5)

    def test_b_client_tpm1000_estimates_300_ten_at_once(self):
        # As S14's endpoint case, on the client's entry: the answers report
        # 300, as estimated, so exactly 3 of 10 go whatever the order.
        socks = [v for _, v in sorted(self.process_sockets().items())]
        up = self.mock("cltpm", "chat", usage=(100, 200))
        carol = new_key()
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-cltpm"])],
                       apiKeys=[{"key": carol, "name": "carol", "tpm": 1000}])

        def one(i):
            return harness.fastcgi_request(socks[i % len(socks)], "POST", self.gw.url_path(CHAT),
                                           body=chat_of_estimate("m-cltpm", 300), key=carol)

        res = fire_at_once(10, one)
        self.assertCounts(statuses(res), {200: 3, 429: 7}, "client tpm 1000, 10 x 300 at once")
        self.assertEqual(up.count(), 3, "requests that reached the upstream")
        for r in res:
            if r.status == 429:
                self.assertError(r, 429, "rate_limit_error", "client_rate_limited")
                self.assertRetryAfter(r, 55, 61)
        # The endpoint has no limit: another key goes on.
        self.assertStatus(self.post(CHAT, chat_of_estimate("m-cltpm", 300)), 200)
        self.gw.advance_clock(61)
        self.assertStatus(one(0), 200)


class S19ClientUsage(ClockBase):
    """Usage per client (issue 15 point 5; doc/behaviour.md, Limits and
    state: usage per client): each served answer counted in its client's
    book on the responder's local day, per model, in the step that records
    its outcome, across every process. Clients are named after the test
    (uid), so the books of other cases on this gateway do not count here;
    the clock stands still until the test moves it."""

    def setUp(self):
        super().setUp()
        self.alice, self.bob, self.admin = new_key(), new_key(), new_key()
        self.alice_name = self.uid("alice")
        self.bob_label = self.bob[-4:]  # no name: its key's last 4 characters

    def clients(self, key, want=200):
        r = self.get("/v1/usage", key=key)
        self.assertStatus(r, want)
        j = r.json()
        self.assertEqual(j.get("object"), "usage", self.diag(r))
        for secret in (self.alice, self.bob, self.admin):
            self.assertNotIn(secret, r.body.decode(), "a key in /v1/usage")
        return j, {c["client"]: c for c in j["clients"]}

    def today_date(self):
        return datetime.datetime.fromtimestamp(self.gw.clock_now(), LOCAL_TZ).strftime(
            "%Y-%m-%d")

    def test_a_usage_equals_the_traffic_per_client_and_model(self):
        up = self.mock("us", "auto", usage=(11, 7), stream_usage=(5, 3), events=2,
                       interval_ms=10)
        bad = self.mock("usbad", "status", status=400)
        aid, bid = self.uid("a"), self.uid("b")
        self.configure([self.api(aid, up.url, ["m-us1", "m-us2"]),
                        self.api(bid, bad.url, ["m-usbad"])],
                       apiKeys=[{"key": self.alice, "name": self.alice_name},
                                {"key": self.bob}],
                       adminKeys=[self.admin])
        # (key, model, stream) of each request, fired at once across the
        # processes: alice 3 JSON and 2 streams of m-us1, 1 JSON of m-us2;
        # bob 2 JSON and 1 stream of m-us2; a 400 passed on counts nowhere.
        plan = ([(self.alice, "m-us1", False)] * 3 + [(self.alice, "m-us1", True)] * 2 +
                [(self.alice, "m-us2", False)] + [(self.bob, "m-us2", False)] * 2 +
                [(self.bob, "m-us2", True)] + [(self.alice, "m-usbad", False)])

        def one(i):
            key, model, stream = plan[i]
            if stream:
                return self.gw.stream("POST", CHAT, body=chat(model, stream=True), key=key)
            return self.post(CHAT, chat(model), key=key)

        res = fire_at_once(len(plan), one)
        self.assertCounts(statuses(res), {200: 9, 400: 1}, "the traffic")
        j, by = self.clients(self.alice)
        self.assertEqual(list(by), [self.alice_name], "alice sees only her own")
        self.assertEqual(j["date"], self.today_date())
        self.assertEqual(j["days"], 31)
        a = by[self.alice_name]
        self.assertEqual(len(a["days"]), 31)
        self.assertEqual(a["days"][0]["date"], self.today_date())
        self.assertEqual(a["today"], a["days"][0])
        m1 = {"requests": 5, "prompt_tokens": 3 * 11 + 2 * 5,
              "completion_tokens": 3 * 7 + 2 * 3, "total_tokens": 3 * 18 + 2 * 8}
        m2 = {"requests": 1, "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        self.assertEqual(a["today"]["models"], {"m-us1": m1, "m-us2": m2}, json.dumps(a))
        for k in m1:
            self.assertEqual(a["today"][k], m1[k] + m2[k], k)
            self.assertEqual(a["total"][k], m1[k] + m2[k], k)
        self.assertTrue(all(d["requests"] == 0 for d in a["days"][1:]), json.dumps(a))

        _, by = self.clients(self.bob)
        self.assertEqual(list(by), [self.bob_label], "bob sees only his own")
        b_m2 = {"requests": 3, "prompt_tokens": 2 * 11 + 5, "completion_tokens": 2 * 7 + 3,
                "total_tokens": 2 * 18 + 8}
        self.assertEqual(by[self.bob_label]["today"]["models"], {"m-us2": b_m2})

        # An admin sees both (and the other cases' clients, if any).
        _, by = self.clients(self.admin)
        self.assertEqual(by[self.alice_name]["today"]["models"], {"m-us1": m1, "m-us2": m2})
        self.assertEqual(by[self.bob_label]["today"]["models"], {"m-us2": b_m2})
        self.assertNotIn(self.admin[-4:], by, "the admin was served nothing")

        # /metrics (an admin's), by client, never the key.
        r = self.get("/metrics", key=self.admin)
        self.assertStatus(r, 200)
        text = r.body.decode()
        self.assertIn('api_together_client_requests_total{client="%s"} 6\n' % self.alice_name,
                      text)
        self.assertIn('api_together_client_requests_total{client="%s"} 3\n' % self.bob_label,
                      text)
        for typ, v in (("prompt", m1["prompt_tokens"] + 11),
                       ("completion", m1["completion_tokens"] + 7),
                       ("total", m1["total_tokens"] + 18)):
            self.assertIn('api_together_client_tokens_total{client="%s",type="%s"} %d\n'
                          % (self.alice_name, typ, v), text)
        for secret in (self.alice, self.bob):
            self.assertNotIn(secret, text)

        # --status prints it, on the responder's (test) clock.
        env = dict(os.environ, **self.gw.responder_env())
        out = subprocess.run([self.gw.binary, "--status"], env=env, capture_output=True,
                             text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        row = cli_row(out.stdout, self.alice_name)
        self.assertIsNotNone(row, out.stdout)
        self.assertEqual(row[1:5], ["6", "%d/%d/%d" % (m1["prompt_tokens"] + 11,
                                                      m1["completion_tokens"] + 7,
                                                      m1["total_tokens"] + 18),
                                    "6", "%d/%d/%d" % (m1["prompt_tokens"] + 11,
                                                      m1["completion_tokens"] + 7,
                                                      m1["total_tokens"] + 18)], out.stdout)
        for secret in (self.alice, self.bob):
            self.assertNotIn(secret, out.stdout)

    def test_b_the_day_rolls_over_and_days_older_than_30_drop(self):
        up = self.mock("usd", "chat", usage=(1, 2))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-usd"])],
                       apiKeys=[{"key": self.alice, "name": self.alice_name}])
        now = datetime.datetime.fromtimestamp(self.gw.clock_now(), LOCAL_TZ)
        target = now.replace(hour=23, minute=59, second=50, microsecond=0)
        if target <= now:
            target += datetime.timedelta(days=1)
        self.gw.advance_clock((target - now).total_seconds())
        day0 = self.today_date()
        for _ in range(2):
            self.assertStatus(self.post(CHAT, chat("m-usd"), key=self.alice), 200)
        self.gw.advance_clock(12)  # the next local day
        self.assertStatus(self.post(CHAT, chat("m-usd"), key=self.alice), 200)
        _, by = self.clients(self.alice)
        a = by[self.alice_name]
        self.assertEqual([(d["date"], d["requests"]) for d in a["days"][:2]],
                         [(self.today_date(), 1), (day0, 2)], json.dumps(a["days"][:3]))
        self.assertEqual(a["days"][1]["models"]["m-usd"]["total_tokens"], 6)
        # 29 days on, day0 is the 30th day before today: still there.
        self.gw.advance_clock(29 * 86400)
        _, by = self.clients(self.alice)
        days = by[self.alice_name]["days"]
        self.assertEqual((days[30]["date"], days[30]["requests"]), (day0, 2))
        self.assertEqual(days[29]["requests"], 1)
        # A day more and it is gone; the totals since the book began stay.
        self.gw.advance_clock(86400)
        _, by = self.clients(self.alice)
        a = by[self.alice_name]
        self.assertNotIn(day0, [d["date"] for d in a["days"]])
        self.assertEqual(sum(d["requests"] for d in a["days"]), 1, json.dumps(a["days"]))
        self.assertEqual(a["days"][30]["requests"], 1)
        self.assertEqual(a["total"]["requests"], 3)


def utc_at(*ymdhms):
    """Seconds since the epoch of a UTC date and time."""
    return int(datetime.datetime(*ymdhms, tzinfo=datetime.timezone.utc).timestamp())


def iso(t):
    """t (whole seconds since the epoch) as /v1/status writes a time."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


class S15DayResetTimezone(ClockBase):
    """apis[].dayResetTimezone (doc/behaviour.md, Limits and state, rule 26):
    the endpoint's days are America/Los_Angeles's while the responder runs
    in UTC. Each case moves the test clock to a moment of 2027 it names and
    uses endpoints of its own, so the order of the cases does not matter."""
    gateway_name = "st-clock-utc"
    gateway_kwargs = {"max_procs": PROCS, "tz": "UTC", "binary": harness.TESTCLOCK_BIN,
                      "clock": True}
    ZONE = "America/Los_Angeles"

    def clock_to(self, t):
        self.gw.advance_clock(t - self.gw.clock_now())

    def two_endpoints(self, name, rpd):
        """One endpoint on Los Angeles's calendar, one on the local (UTC) one,
        each serving a model of its own."""
        la_up, utc_up = self.mock(name + "la", "chat", usage=(11, 7)), self.mock(name + "utc")
        la, utc = self.uid("la"), self.uid("utc")
        self.configure([self.api(la, la_up.url, ["m-%s-la" % name], rpd=rpd,
                                 dayResetTimezone=self.ZONE),
                        self.api(utc, utc_up.url, ["m-%s-utc" % name], rpd=rpd)])
        return la, la_up, utc

    def rolls_over_at(self, name, midnight_utc):
        """2 requests 10 s before Los Angeles's midnight (at midnight_utc),
        the day's rpd 2 spent, then a new day 2 s after it."""
        self.clock_to(midnight_utc - 10)
        la, up, utc = self.two_endpoints(name, 2)
        model = "m-%s-la" % name
        self.assertCounts(statuses(self.seq(2, model)), {200: 2}, "2 before midnight")
        r = self.chat_post(model)
        self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
        self.assertRetryAfter(r, 1, 11)
        st = self.status_entry(la)
        self.assertEqual(st["usage"]["rpd"], 2, st)
        self.assertEqual(st["tokensToday"]["total"], 36, st)
        self.assertEqual(st["dayResetsAt"], iso(midnight_utc), st)
        # The endpoint without a zone keeps the responder's (UTC) midnight.
        self.assertEqual(self.status_entry(utc)["dayResetsAt"],
                         iso((midnight_utc // 86400 + 1) * 86400), "UTC endpoint")
        out = cli_status(self.gw).stdout
        self.assertIn("  day resets at %s (%s)\n" % (iso(midnight_utc), self.ZONE), out)
        self.gw.advance_clock(12)
        st = self.status_entry(la)
        self.assertEqual(st["usage"]["rpd"], 0, st)
        self.assertEqual(st["tokensToday"]["total"], 0, st)
        self.assertEqual(st["dayResetsAt"], iso(midnight_utc + 86400), st)
        self.assertCounts(statuses(self.seq(3, model)), {200: 2, 429: 1}, "the new day's")
        self.assertEqual(up.count(), 4)

    def test_a_winter_at_0800_utc(self):
        self.rolls_over_at("tzw", utc_at(2027, 1, 15, 8))

    def test_b_summer_at_0700_utc(self):
        self.rolls_over_at("tzs", utc_at(2027, 7, 15, 7))

    def switch_day(self, name, start_utc, hours):
        """A day of the given length: one request just after its start, the
        day's rpd 1 spent until its end, a new day after it."""
        self.clock_to(start_utc + 10)
        la, up, _ = self.two_endpoints(name, 1)
        model = "m-%s-la" % name
        end = start_utc + hours * 3600
        self.assertStatus(self.chat_post(model), 200)
        r = self.chat_post(model)
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, hours * 3600 - 10, hours * 3600 - 9)
        self.assertEqual(self.status_entry(la)["dayResetsAt"], iso(end))
        self.gw.advance_clock(end - 5 - self.gw.clock_now())
        r = self.chat_post(model)
        self.assertStatus(r, 429)
        self.assertRetryAfter(r, 5, 5)
        self.gw.advance_clock(7)
        self.assertStatus(self.chat_post(model), 200)
        self.assertEqual(up.count(), 2)

    def test_c_spring_forward_day_of_23_hours(self):
        # 14 March 2027 starts at 08:00 UTC (PST) and ends at 07:00 UTC (PDT).
        self.switch_day("tzspring", utc_at(2027, 3, 14, 8), 23)

    def test_d_fall_back_day_of_25_hours(self):
        # 7 November 2027 starts at 07:00 UTC (PDT) and ends at 08:00 UTC (PST).
        self.switch_day("tzfall", utc_at(2027, 11, 7, 7), 25)

    def test_e_client_tpd_on_its_own_day(self):
        # 03:00 UTC: still the day before in Los Angeles. A client with a
        # tpd reserves each request's estimate (300) in the responder's
        # (UTC) day; the answer's 18 tokens replace it there, whatever the
        # endpoint's calendar. Were the estimates left in flight, the 4th
        # request would be refused (3 x 318 + 300 > 1000).
        self.clock_to(utc_at(2027, 1, 15, 3))
        up = self.mock("tzcl", "chat", usage=(11, 7))
        dave = new_key()
        self.configure([self.api(self.uid("la"), up.url, ["m-tzcl"],
                                 dayResetTimezone=self.ZONE)],
                       apiKeys=[{"key": dave, "name": "dave", "tpd": 1000}])
        for i in range(6):
            r = self.post(CHAT, chat_of_estimate("m-tzcl", 300), key=dave)
            self.assertStatus(r, 200)
        self.assertEqual(up.count(), 6)


class S16ModelLimits(ClockBase):
    """apis[].modelLimits (doc/behaviour.md, Limits and state, rule 27): a
    model's own limits per key, on top of the endpoint's, reserved in the
    same atomic step. The clock stands still until the test moves it."""

    def test_a_the_model_at_its_rpm_another_model_served(self):
        up = self.mock("ml", "chat", usage=(10, 10))
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-ml-a", "m-ml-b"],
                                 modelMapping={"m-ml-alias": "m-ml-a"},
                                 modelLimits={"m-ml-a": {"rpm": 1}})])
        self.assertStatus(self.chat_post("m-ml-a"), 200)
        for model in ("m-ml-a", "m-ml-alias"):
            # The alias is sent upstream as m-ml-a: the same model's limit.
            r = self.chat_post(model)
            self.assertError(r, 429, "rate_limit_error", "rate_limit_exceeded")
            self.assertRetryAfter(r, 59, 60)
        self.assertCounts(statuses(self.seq(3, "m-ml-b")), {200: 3}, "another model")
        self.assertEqual(up.count(), 4)
        st = self.status_entry(aid)
        self.assertEqual(st["usage"]["rpm"], 4, st)
        self.assertEqual(st["modelLimits"]["m-ml-a"]["limits"],
                         {"rpm": 1, "rpd": -1, "tpm": -1, "tpd": -1}, st)
        self.assertEqual(st["modelLimits"]["m-ml-a"]["usage"]["rpm"], 1, st)
        # A minute later the model has room again.
        self.gw.advance_clock(61)
        self.assertStatus(self.chat_post("m-ml-alias"), 200)
        self.assertEqual(up.count(), 5)

    def test_b_ten_at_once_exactly_rpm(self):
        # Through each process's own socket in turn: the model's count is
        # taken with the key's, in one atomic step across the processes.
        socks = [v for _, v in sorted(self.process_sockets().items())]
        up = self.mock("mlx", "chat")
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-mlx-a", "m-mlx-b"],
                                 modelLimits={"m-mlx-a": {"rpm": 3}})])

        def one(i):
            return harness.fastcgi_request(socks[i % len(socks)], "POST", self.gw.url_path(CHAT),
                                           body=chat("m-mlx-a"), key=CLIENT_KEY)

        self.assertCounts(statuses(fire_at_once(10, one)), {200: 3, 429: 7},
                          "model rpm 3, 10 at once")
        self.assertEqual(up.count(), 3)

    def test_d_each_keys_model_usage_is_shown(self):
        # Issue 14 point 6: per model, its limits and its usage summed and
        # per key, in /v1/status, /metrics and --status.
        up = self.mock("mlk", "chat", usage=(50, 50))
        keys = [new_key("sk-pool-") for _ in range(2)]
        aid = self.uid("a")
        self.configure([self.api(aid, up.url, ["m-mlk-a", "m-mlk-b"], apiKey=keys,
                                 modelLimits={"m-mlk-a": {"rpm": 5, "tpd": 10000}})])
        self.assertCounts(statuses(self.seq(3, "m-mlk-a") + self.seq(1, "m-mlk-b")), {200: 4},
                          "3 of the model, 1 of another")
        st = self.status_entry(aid)
        ml = st["modelLimits"]["m-mlk-a"]
        self.assertEqual(ml["limits"], {"rpm": 5, "rpd": -1, "tpm": -1, "tpd": 10000}, st)
        self.assertEqual(ml["usage"], {"rpm": 3, "rpd": 3, "tpm": 300, "tpd": 300}, st)
        # Least recently used first: keys 0, 1, 0 for the model.
        self.assertEqual(ml["keys"], [
            {"key": "\u2026" + keys[0][-4:], "usage": {"rpm": 2, "rpd": 2, "tpm": 200, "tpd": 200}},
            {"key": "\u2026" + keys[1][-4:], "usage": {"rpm": 1, "rpd": 1, "tpm": 100, "tpd": 100}},
        ], st)
        metrics = self.gw.request("GET", "/metrics", key=CLIENT_KEY).body.decode()
        for k, (rpm, tok) in zip(keys, ((2, 200), (1, 100))):
            for kind, v in (("rpm", rpm), ("rpd", rpm), ("tpm", tok), ("tpd", tok)):
                self.assertIn('api_together_model_used{endpoint="%s",key="\u2026%s",'
                              'model="m-mlk-a",limit="%s"} %d' % (aid, k[-4:], kind, v), metrics)
        self.assertIn('api_together_model_limit{endpoint="%s",model="m-mlk-a",limit="rpm"} 5'
                      % aid, metrics)
        self.assertIn('api_together_model_limit{endpoint="%s",model="m-mlk-a",limit="tpd"} '
                      '10000' % aid, metrics)
        self.assertNotIn('model="m-mlk-a",limit="tpm"} -1', metrics)
        self.assertNotIn('model="m-mlk-b"', metrics)
        out = cli_status(self.gw).stdout
        self.assertIn("  model m-mlk-a rpm=3/5 rpd=3/-1 tpm=300/-1 tpd=300/10000\n", out)
        self.assertIn("    key \u2026%s rpm=2/5 rpd=2/-1 tpm=200/-1 tpd=200/10000\n"
                      % keys[0][-4:], out)
        self.assertIn("    key \u2026%s rpm=1/5 rpd=1/-1 tpm=100/-1 tpd=100/10000\n"
                      % keys[1][-4:], out)

    def test_c_the_model_goes_to_another_endpoint(self):
        up_a, up_b = self.mock("mla"), self.mock("mlb")
        a, b = self.uid("a"), self.uid("b")
        self.configure([self.api(a, up_a.url, ["m-mlo"], priority=1,
                                 modelLimits={"m-mlo": {"rpm": 1}}),
                        self.api(b, up_b.url, ["m-mlo"])])
        self.assertCounts(statuses(self.seq(3, "m-mlo")), {200: 3}, "3 of the model")
        self.assertEqual((up_a.count(), up_b.count()), (1, 2))


ORDER = [S01ExactLimits, S02Window, S03Midnight, S04Cooldown, S11KeyPools, S12PriorityTiers,
         S13Fallbacks, S14TokenLimits, S15DayResetTimezone, S16ModelLimits, S17ClientLimits,
         S18History, S19ClientUsage,
         S05Restart, S06Kill9, S07BrokenState, S08Tokens,
         S09RedisFaults, S10TwoHosts]


def main(argv):
    print("# store: %s" % STORE)
    return th.run_tap(argv, sys.modules[__name__], ORDER)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
