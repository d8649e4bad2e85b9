"""``make test``'s short run of the callback fuzzer (tests/fuzz/callback_fuzz.py): 60 s of
coverage-guided inputs from the seeded corpus, in a process of its own (libFuzzer exits when
done). Any exception other than a typed rejection, or one input slower than 2 s, fails it;
libFuzzer writes the input that did it into the test's directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "fuzz" / "callback_fuzz.py"
SMOKE_SECONDS = 60


def test_sixty_seconds_of_fuzzing_find_no_crash(tmp_path):
    corpus, crashes = tmp_path / "corpus", tmp_path / "crashes"
    crashes.mkdir()
    # Started by a shell that forks it: Linux carries a process's peak RSS (what libFuzzer's
    # -rss_limit_mb checks) across exec, so a direct child would start at this test
    # process's peak, gigabytes once the Serve tests have run, and be "out of memory" at once.
    run = subprocess.run(
        ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, str(HARNESS), str(corpus), f"-max_total_time={SMOKE_SECONDS}", "-timeout=2",
         "-rss_limit_mb=2048", f"-artifact_prefix={crashes}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SMOKE_SECONDS + 120)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and not any(crashes.iterdir()), output[-4000:]
    executions = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", output).group(1))
    coverage = re.findall(r"cov: (\d+)", output)[-1]
    print(f"fuzz smoke: {executions} inputs in {SMOKE_SECONDS} s, coverage {coverage} edges, corpus "
          f"{sum(1 for _ in corpus.iterdir())} inputs")
    assert executions > 1000  # it ran, rather than exiting at start
