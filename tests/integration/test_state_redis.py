#!/usr/bin/env python3
"""The cases of test_state.py with the Redis store (issue 7), behind lighttpd:
each gateway gets a redis-server of its own on a loopback port (the harness's
RedisServer), named to the responder by API_TOGETHER_STORE; the two-host case
shares one. Nothing but the store differs: this only sets
API_TOGETHER_TEST_STORE=redis and runs test_state.main(); without redis-server
it skips."""

import os
import sys

os.environ["API_TOGETHER_TEST_STORE"] = "redis"
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_state  # noqa: E402

if __name__ == "__main__":
    missing = harness.redis_missing()
    if missing:
        print("1..0 # SKIP %s" % missing)
        sys.exit(0)
    sys.exit(test_state.main(sys.argv[1:]))
