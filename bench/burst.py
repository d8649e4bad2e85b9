"""WeChat's worst hour: a burst of messages through the emulator into the real pipeline.

The same as ``wxassist bench burst``: 200 messages from 50 users in 10 s, two ingress
replicas, a stand-in generator at 0.5 s per answer, four at a time (the queue outgrows the
passive window, so later answers are pushed). Prints delivered, duplicates, lost, passive
share and p50/p99 time to answer; exits 1 unless every message was answered exactly once.

    .venv/bin/python bench/burst.py [--json] [--messages N] [--state-uri redis://…]
"""

from __future__ import annotations

import sys

from functions.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "burst", *sys.argv[1:]]))
