"""Generation throughput: the generate replica with continuous batching at 1, 4, 16 and 32
concurrent chats against one ``model.generate`` per request in a loop (the naive way), same
model, dtype, questions and budget, in one run. The same as ``wxassist bench generate``.

    .venv/bin/python bench/generate.py [--json] [--concurrency 1,4,16,32] [--max-new-tokens 64]
"""

from __future__ import annotations

import sys

from functions.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "generate", *sys.argv[1:]]))
