"""Cold start of a generate replica: restoring the model from S3 against loading it from a
local directory, and against a warm node cache.

Starts a real S3 server (``weed mini``) on 127.0.0.1, backs the demo model up into it
(boto3, ``s3://``), then times the generate replica's constructor — what Serve runs before a
replica takes traffic — in three ways, interleaved over several rounds so machine noise hits
all three alike:

* local: the demo model's folder, no store (the embedded default);
* S3 cold: ``WXA_MODEL=demo@1`` on an empty cache: download, verify every SHA-256, load;
* warm cache: the same on a node whose cache already holds the verified version.

Prints medians and the ratios to the local load, plus the restore alone (download + verify)
and its throughput.

    .venv/bin/python bench/cold_start.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from functions.model_store import open_model_store, restore_model  # noqa: E402
from functions.model_store.local_s3 import LocalS3Server  # noqa: E402
from functions.common.settings import Settings  # noqa: E402
from functions.generate.deployment import GenerateServer  # noqa: E402
from observability.logs import quiet_libraries  # noqa: E402


def timed(start) -> float:
    began = time.perf_counter()
    start()
    return time.perf_counter() - began


def timed_replica(overrides: dict) -> float:
    """Seconds to construct a generate replica, what Serve waits for before it takes traffic.
    The replica is closed before this returns (engine loop, threads, model), so no round runs
    beside engines left over from earlier ones."""
    began = time.perf_counter()
    server = GenerateServer(settings_overrides=overrides)
    try:
        return time.perf_counter() - began
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    scratch = Path(tempfile.mkdtemp(prefix="wxassist-cold-start-"))
    demo = Settings(model_cache=REPO / ".wxassist" / "models").model_dir()
    if not (demo / "model.safetensors").is_file():
        raise SystemExit(f"no demo model at {demo}: run `make setup` first")
    model_bytes = sum(p.stat().st_size for p in demo.iterdir() if p.is_file())
    times: dict[str, list[float]] = {"local": [], "s3_cold": [], "warm_cache": [], "restore_cold": [], "restore_warm": []}
    try:
        with LocalS3Server(scratch / "s3") as server:
            server.create_bucket("wxassist-models")
            os.environ.update({k: v for k, v in server.environment().items() if k != "WXA_S3_ENDPOINT"})
            uri = "s3://wxassist-models/models"
            base = {"home": str(scratch / "home"), "max_new_tokens": 8, "torch_threads": os.cpu_count() or 1,
                    "s3_endpoint": server.endpoint, "s3_region": "us-east-1"}
            store_settings = Settings(**base)
            open_model_store(store_settings, uri).push(demo, "demo", source="bundled SmolLM2 GGUF")
            pinned = {**base, "model": "demo@1", "model_store": uri}
            warm_cache = scratch / "warm-cache"
            timed_replica({**pinned, "model_cache": str(warm_cache)})  # fills the warm cache
            for round_number in range(opts.rounds):
                cold_cache = scratch / f"cold-{round_number}"
                times["local"].append(timed_replica({**base, "model_cache": str(demo.parent)}))
                times["s3_cold"].append(timed_replica({**pinned, "model_cache": str(cold_cache)}))
                times["warm_cache"].append(timed_replica({**pinned, "model_cache": str(warm_cache)}))
                store = open_model_store(store_settings, uri)
                restore_cache = scratch / f"restore-{round_number}"
                times["restore_cold"].append(timed(lambda: restore_model(store, "demo@1", restore_cache)))
                times["restore_warm"].append(timed(lambda: restore_model(store, "demo@1", restore_cache)))
                shutil.rmtree(cold_cache)
                shutil.rmtree(restore_cache)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    report = {
        "model_mb": round(model_bytes / 1e6, 1),
        "rounds": opts.rounds,
        **{f"{name}_s": round(value, 3) for name, value in medians.items()},
        "s3_cold_vs_local": round(medians["s3_cold"] / medians["local"], 2),
        "warm_cache_vs_local": round(medians["warm_cache"] / medians["local"], 2),
        "restore_mb_per_s": round(model_bytes / 1e6 / medians["restore_cold"], 1),
    }
    if opts.json:
        print(json.dumps(report))
    else:
        print(f"generate replica ready, demo model ({report['model_mb']} MB), median of {opts.rounds} rounds:")
        print(f"  local directory   {report['local_s']:7.2f} s   1.00x")
        print(f"  S3, cold cache    {report['s3_cold_s']:7.2f} s   {report['s3_cold_vs_local']:.2f}x")
        print(f"  S3, warm cache    {report['warm_cache_s']:7.2f} s   {report['warm_cache_vs_local']:.2f}x")
        print(f"restore alone: cold {report['restore_cold_s']:.2f} s ({report['restore_mb_per_s']} MB/s, download + "
              f"SHA-256), warm {report['restore_warm_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
