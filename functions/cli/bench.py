"""``wxassist bench``: the generate replica's throughput, the pipeline's messages per second,
and a burst through the WeChat emulator (WeChat's worst hour in one command)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from functions.cli.arguments import positive_int
from functions.cli.kb import open_kb
from functions.cli.pipeline_bench import register_pipeline_bench
from functions.cli.service import apply_one_machine_serve_env
from functions.common.clock import SystemClock
from functions.common.job_journal import JobJournal
from functions.common.outbox import Outbox
from functions.common.settings import load_settings
from functions.common.state import open_state_store
from functions.generate.throughput import cmd_bench_generate
from serve_app import APP_NAME, DEFAULT_SERVE_CONFIG, compose_app, read_serve_config

# The burst's shape, shared by `wxassist bench burst` and the burst test (tests/serve/
# test_deadlines.py), so the test holds what the bench measures: 200 messages from 50 users in
# 10 s into two ingress replicas, a stand-in generator at 0.5 s an answer, 4 at a time (its
# queue outgrows the passive window, so later answers are deferred or pushed).
BURST_INGRESS_REPLICAS = 2
BURST_GENERATE_CONCURRENCY = 4
BURST_ANSWER_S = 0.5
# The FAQ fast path and the answer cache would answer the burst's one question without
# generating: off, so the burst measures deliveries against a generator's pace.
BURST_SETTINGS = {"push_poll_s": 0.2, "wechat_faq_fast_path": False, "wechat_answer_cache": False,
                  "answerability": "off", "wechat_answer_mode": "generate"}


def nothing_left_to_send(settings):
    """True once the service's store holds no open job and no answer waiting to be pushed:
    from then on, nothing more can reach a user."""
    store = open_state_store(settings.state_location(), SystemClock())
    journal, outbox = JobJournal(store, SystemClock(), recheck_s=settings.job_lease_s), Outbox(store, SystemClock())
    return lambda: journal.size() == 0 and outbox.backlog() == 0


def _cmd_bench_burst(opts: argparse.Namespace) -> int:
    """WeChat's worst hour in one command: a burst through the emulator into the real
    pipeline on a private Ray instance, with a paced stand-in for the GPU. Exit status 1
    when any message was lost or answered twice."""
    import shutil
    import tempfile

    import ray
    from ray import serve

    from functions.emulator.emulator import WeChatEmulator, emulator_app, run_burst
    from functions.common.net import free_port
    from functions.emulator.platform_api import BackgroundServer
    from functions.common.settings import ensure_dev_credentials
    from functions.generate.paced_engine import PacedEngine

    home = Path(tempfile.mkdtemp(prefix="wxassist-burst-"))
    overrides = {"home": str(home), "state_uri": opts.state_uri, **BURST_SETTINGS}
    settings = load_settings(**overrides)
    ensure_dev_credentials(home)
    _, app_args, options = read_serve_config(Path(opts.config))
    # The paced engine needs no CPU: logical CPUs only, so any machine can run the burst.
    options = {name: {**o, "ray_actor_options": {"num_cpus": 0}} for name, o in options.items()}
    options["ingress"]["num_replicas"] = opts.ingress_replicas
    options["generate"]["max_ongoing_requests"] = opts.generate_concurrency
    port = free_port()
    emulator = WeChatEmulator(settings.account_map(), f"http://127.0.0.1:{port}")
    note = print if not opts.json else lambda *a: print(*a, file=sys.stderr)
    note(f"burst: {opts.messages} messages from {opts.users} users in {opts.seconds:g} s; "
         f"{opts.ingress_replicas} ingress replicas; answers take {opts.answer_s:g} s, "
         f"{opts.generate_concurrency} at a time; state {settings.state_location().split(':')[0]}")
    try:
        with open_kb(settings) as kb:  # the FAQ is enough to ground the fixed answer
            from knowledge import SAMPLE_CORPUS_DIR
            from knowledge.ingest import ingest

            ingest(kb, [SAMPLE_CORPUS_DIR / "faq.jsonl"])
        apply_one_machine_serve_env()  # what `wxassist up` runs with
        ray.init(include_dashboard=False, logging_level="ERROR", num_cpus=2, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        with BackgroundServer(emulator_app(emulator), free_port()) as platform:
            app = compose_app({**app_args, **overrides, "wechat_api_base": platform.url}, options,
                              engine_cls=PacedEngine, engine_kwargs={"seconds_per_answer": opts.answer_s})
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config={"log_level": "WARNING"})
            report = asyncio.run(run_burst(emulator, messages=opts.messages, users=opts.users,
                                           seconds=opts.seconds, settle_s=opts.settle_s,
                                           settled=nothing_left_to_send(settings)))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)
    if opts.json:
        print(json.dumps(report))
    else:
        print(f"sent {report['sent']}  delivered {report['delivered']}  duplicates {report['duplicates']}  "
              f"lost {report['lost']}\npassive share {report['passive_share']:.2f}  "
              f"p50 {report['p50_s']:.1f} s  p99 {report['p99_s']:.1f} s")
    exactly_once = report["delivered"] == report["sent"] and not report["duplicates"] and not report["lost"]
    return 0 if exactly_once else 1


def register_generate_bench(bench) -> None:
    generate = bench.add_parser("generate", help="tokens/s of the generate replica by concurrency vs one generate per request")
    generate.add_argument("--concurrency", default="1,4,16,32", help="comma-separated concurrent chats")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--naive-requests", type=int, default=4, help="requests in each naive loop")
    generate.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    generate.add_argument("--json", action="store_true", help='{"results": [{"concurrency", "tokens_per_s", …}]}')
    generate.set_defaults(handler=cmd_bench_generate)


def register_bench_commands(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    register_generate_bench(bench)
    register_pipeline_bench(bench)
    burst = bench.add_parser(
        "burst", help="a burst through the WeChat emulator: delivered, duplicates, lost, passive share, p50/p99"
    )
    burst.add_argument("--messages", type=positive_int, default=200)
    burst.add_argument("--users", type=positive_int, default=50)
    burst.add_argument("--seconds", type=float, default=10.0, help="spread the messages over this long")
    burst.add_argument("--answer-s", type=float, default=BURST_ANSWER_S,
                       help="seconds the stand-in generator takes per answer")
    burst.add_argument("--generate-concurrency", type=positive_int, default=BURST_GENERATE_CONCURRENCY,
                       help="answers generated at once")
    burst.add_argument("--ingress-replicas", type=positive_int, default=BURST_INGRESS_REPLICAS)
    burst.add_argument("--state-uri", help="state store (default: a fresh SQLite file); redis://… to scale out")
    burst.add_argument("--settle-s", type=float, default=90.0, help="how long to wait for pushed answers")
    burst.add_argument("--config", default=str(DEFAULT_SERVE_CONFIG), help="Serve config the deployments come from")
    burst.add_argument("--json", action="store_true", help="one JSON object: sent, delivered, duplicates, lost, …")
    burst.set_defaults(handler=_cmd_bench_burst)
