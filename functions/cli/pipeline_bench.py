"""``wxassist bench pipeline``: what the hops between the functions cost.

The same messages (signed, encrypted callbacks prepared before the clock starts, each from
its own user so nothing is deduplicated or rate-limited) go through:

* ``split``: the Serve app as deployed, every step its own deployment;
* ``fused``: the Serve app with decrypt, intent and encrypt inside the ingress process;
* ``inprocess``: the ingress calling every step's class directly in one server process, no
  Ray at all — the floor the other two are measured against.

Every mode is served over HTTP on 127.0.0.1 and driven by the same aiohttp client.

The question is small talk ("讲个笑话"), which takes the whole path except retrieval —
decrypt, the claim ledger, intent, memory, generate, encrypt — and generate's engine answers
instantly, so what is measured is the pipeline, not a model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("split", "fused", "inprocess")
QUESTION = "讲个笑话"


def _callbacks(account, count: int) -> list[tuple[dict[str, str], bytes]]:
    from functions.common.clock import SystemClock
    from functions.emulator.platform import PlatformSimulator, text_message_xml

    platform = PlatformSimulator(account, SystemClock())
    prepared = []
    for index in range(count):
        xml = text_message_xml(to_user="gh_bench", from_user=f"o-bench-{index}", content=QUESTION,
                               msg_id=str(10**12 + index), create_time=int(time.time()))
        callback = platform.callback(xml)
        prepared.append((callback.query, callback.body))
    return prepared


async def _drive(session, callbacks, concurrency: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies_ms: list[float] = []
    errors = 0

    async def one(query, body) -> None:
        nonlocal errors
        async with gate:
            began = time.perf_counter()
            try:
                async with session.post("/wechat/default", params=query, data=body) as response:
                    content = await response.read()
                    if response.status != 200 or b"<xml>" not in content:
                        errors += 1
            except Exception:  # noqa: BLE001 - any failure is an error in the count
                errors += 1
            latencies_ms.append((time.perf_counter() - began) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(query, body) for query, body in callbacks))
    elapsed = time.perf_counter() - started
    latencies_ms.sort()
    return {"msgs_per_s": round(len(callbacks) / elapsed, 1), "p50_ms": round(statistics.median(latencies_ms), 1),
            "p99_ms": round(latencies_ms[min(len(latencies_ms) - 1, int(0.99 * len(latencies_ms)))], 1),
            "errors": errors}


async def _bench(base_url: str, callbacks, warmup, concurrency: int) -> dict[str, Any]:
    # aiohttp, not httpx: at 50 connections httpx spent ~4 ms of CPU per request here
    # (aiohttp ~0.2 ms), and on 2 cores the client's CPU is taken from the server measured.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await _drive(session, warmup, concurrency)  # routers, pools and caches set up first
        return await _drive(session, callbacks, concurrency)


def measure(*, messages: int, concurrency: int, modes: tuple[str, ...],
            ingress_replicas: int | None = None) -> dict[str, Any]:
    """``ingress_replicas`` None: as many as ``deploy/local.yaml`` runs. Serve's throughput
    flags are set as ``wxassist up`` sets them, so the default run measures the default."""
    import ray
    from ray import serve

    from functions.common.net import free_port
    from functions.common.settings import ensure_dev_credentials, load_settings
    from functions.generate.paced_engine import PacedEngine
    from functions.cli.service import THROUGHPUT_FLAGS, apply_one_machine_serve_env
    from serve_app import APP_NAME, DEFAULT_SERVE_CONFIG, compose_app, \
        read_serve_config

    home = Path(tempfile.mkdtemp(prefix="wxassist-pipeline-"))
    overrides = {"home": str(home), "user_burst": 0, "account_burst": 0, "intent_knn": False,
                 "wechat_faq_fast_path": False, "wechat_answer_cache": False,
                 "answerability": "off", "wechat_answer_mode": "generate", "log_level": "WARNING"}
    settings = load_settings(**overrides)
    ensure_dev_credentials(home)
    account = settings.account_map()["default"]
    engine = {"engine_cls": PacedEngine, "engine_kwargs": {"seconds_per_answer": 0.0}}
    results: dict[str, Any] = {}
    try:
        serve_modes = [mode for mode in modes if mode != "inprocess"]
        if serve_modes:
            _, app_args, options = read_serve_config(DEFAULT_SERVE_CONFIG)
            options = {name: {**o, "ray_actor_options": {"num_cpus": 0}} for name, o in options.items()}
            if ingress_replicas is not None:
                options["ingress"]["num_replicas"] = ingress_replicas
            ingress_replicas = options["ingress"].get("num_replicas", 1)
            apply_one_machine_serve_env()
            port = free_port()
            ray.init(include_dashboard=False, logging_level="ERROR", num_cpus=2, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
            for mode in serve_modes:
                app = compose_app({**app_args, **overrides, "home": str(home / mode), "pipeline_mode": mode},
                                  options, **engine)
                _share_credentials(home, home / mode)
                serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": "WARNING"})
                callbacks = _callbacks(account, messages + concurrency)
                results[mode] = asyncio.run(_bench(f"http://127.0.0.1:{port}", callbacks[concurrency:],
                                                   callbacks[:concurrency], concurrency))
                serve.delete(APP_NAME)
            serve.shutdown()
            ray.shutdown()
        if "inprocess" in modes:
            results["inprocess"] = _inprocess(overrides, engine, account, messages, concurrency)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    flags = {flag: os.environ.get(flag, "0") for flag in THROUGHPUT_FLAGS}
    return {"modes": results, "messages": messages, "concurrency": concurrency, "ingress_replicas": ingress_replicas,
            "serve_flags": flags}


def _inprocess(overrides, engine, account, messages: int, concurrency: int) -> dict[str, Any]:
    """The ingress and every step in one server process of its own (as the Serve modes'
    replicas are processes of their own), behind the same HTTP server, hit by the same client."""
    import multiprocessing

    from functions.common.net import free_port

    home = Path(overrides["home"]) / "inprocess"
    _share_credentials(Path(overrides["home"]), home)
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=_serve_inprocess, args=({**overrides, "home": str(home)}, engine, port, ready),
                             daemon=True)
    server.start()
    try:
        if not ready.wait(timeout=300):
            raise RuntimeError("the in-process server did not start")
        callbacks = _callbacks(account, messages + concurrency)
        return asyncio.run(_bench(f"http://127.0.0.1:{port}", callbacks[concurrency:], callbacks[:concurrency],
                                  concurrency))
    finally:
        server.terminate()
        server.join(timeout=30)


def _share_credentials(home: Path, mode_home: Path) -> None:
    """Each mode has a home of its own (its state), with the account the callbacks were signed for."""
    mode_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(home / "dev-credentials.json", mode_home / "dev-credentials.json")


def _serve_inprocess(settings_overrides, engine, port: int, ready) -> None:
    import uvicorn

    from functions.generate.deployment import GenerateServer
    from functions.retrieve.deployment import RetrieveServer
    from functions.ingress.deployment import Ingress
    from functions.ingress.handles import InProcessHandle
    from functions.ingress.http import http_app

    class NoPush:
        def ready(self) -> bool:
            return True

    async def serve() -> None:
        ingress = Ingress(  # None: the ingress runs decrypt, intent and encrypt itself, as fused mode does
            None, None, InProcessHandle(RetrieveServer(settings_overrides)),
            InProcessHandle(GenerateServer(**engine, settings_overrides=settings_overrides)), None,
            InProcessHandle(NoPush()), settings_overrides,
        )
        await ingress.warm_up()
        server = uvicorn.Server(uvicorn.Config(http_app(ingress), host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        ready.set()
        await serving

    asyncio.run(serve())


def cmd_bench_pipeline(opts: argparse.Namespace) -> int:
    modes = tuple(opts.modes.split(","))
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes: {', '.join(sorted(unknown))} (choose from {', '.join(MODES)})")
    note = print if not opts.json else (lambda *a: print(*a, file=sys.stderr))
    note(f"pipeline: {opts.messages} messages, {opts.concurrency} at a time, modes {', '.join(modes)}; instant engine")
    report = measure(messages=opts.messages, concurrency=opts.concurrency, modes=modes,
                     ingress_replicas=opts.ingress_replicas)
    if opts.json:
        print(json.dumps(report))
        return 0
    flags = " ".join(f"{flag}={value}" for flag, value in report["serve_flags"].items())
    print(f"  Serve modes: {report['ingress_replicas']} ingress replica(s), {flags}")
    floor = report["modes"].get("inprocess", {}).get("msgs_per_s")
    for mode, row in report["modes"].items():
        ratio = f"  {row['msgs_per_s'] / floor:.2f}x in-process" if floor else ""
        print(f"  {mode:<9} {row['msgs_per_s']:7.1f} msgs/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
              f"errors {row['errors']}{ratio}")
    return 0


def register_pipeline_bench(bench) -> None:
    pipeline = bench.add_parser("pipeline", help="messages/s and p50/p99 through the app: split vs fused vs in-process")
    pipeline.add_argument("--messages", type=int, default=600)
    pipeline.add_argument("--concurrency", type=int, default=50)
    pipeline.add_argument("--ingress-replicas", type=int, default=None,
                          help="ingress replicas in the Serve modes (default: as deploy/local.yaml)")
    pipeline.add_argument("--modes", default=",".join(MODES), help="comma-separated: split, fused, inprocess")
    pipeline.add_argument("--json", action="store_true", help='{"modes": {"split" | "fused" | "inprocess": {…}}}')
    pipeline.set_defaults(handler=cmd_bench_pipeline)
