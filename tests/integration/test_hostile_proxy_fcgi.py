#!/usr/bin/env python3
"""The cases of test_hostile.py behind Apache 2.4 + mod_proxy_fcgi (the responder runs with --listen).
Nothing but the server differs: this only sets
API_TOGETHER_TEST_SERVER=proxy_fcgi and runs test_hostile.main()."""

import os
import sys

os.environ["API_TOGETHER_TEST_SERVER"] = "proxy_fcgi"
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_hostile  # noqa: E402

if __name__ == "__main__":
    sys.exit(test_hostile.main(sys.argv[1:]))
