#!/usr/bin/env python3
"""The cases of test_admin.py with the Redis store: this only sets
API_TOGETHER_TEST_STORE=redis and runs test_admin.main(); without
redis-server it skips."""

import os
import sys

os.environ["API_TOGETHER_TEST_STORE"] = "redis"
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import test_admin  # noqa: E402

if __name__ == "__main__":
    missing = harness.redis_missing()
    if missing:
        print("1..0 # SKIP %s" % missing)
        sys.exit(0)
    sys.exit(test_admin.main(sys.argv[1:]))
