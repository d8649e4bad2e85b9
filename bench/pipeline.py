"""What the hops between the functions cost: messages/s and p50/p99 through the whole app
with an instant engine, split (every step a deployment) vs fused (the cheap steps inside the
ingress) vs the ingress calling every step in-process. The same as ``wxassist bench pipeline``.

    .venv/bin/python bench/pipeline.py [--json] [--messages 600] [--concurrency 50]
"""

from __future__ import annotations

import sys

from functions.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))
