"""``wxassist eval QUESTIONS.jsonl``: the operator's acceptance test before going live.

Every question goes through the real answer path, in this process: the ingress's stages
(limits, intent, tools, the FAQ fast path, retrieval and its answerability verdict, the
account's answer mode, the model or the quote, the output filter) with the configured
knowledge base, embedder and model, several questions at a time. Only delivery is left out:
latency is the time to the reply, and "passive" means it was ready inside WeChat's first
delivery window. The evaluation writes nothing the service keeps: its conversation state is a
temporary SQLite file, each question comes from a user of its own, and the answer cache is
neither read nor written (it measures the documents, not earlier answers). With Milvus Lite
the knowledge base must not be open in a running service (stop ``wxassist up``, or serve it
from Milvus).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from functions.common.errors import ConfigurationError
from functions.common.records import InboundMessage
from functions.common.settings import Settings, ensure_dev_credentials, load_settings
from functions.intent.business_info import operator_business_info
from knowledge.evaluation import (LabelledQuestion, Outcome, as_html, as_json, as_table, read_questions,
                                  summarise, summary_lines, verdict)

DEFAULT_CONCURRENCY = 4


def evaluation_overrides(settings: Settings, state_dir: Path, kb: str | None, account: str,
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The service's own settings, except what an evaluation must not touch or be stopped by:
    its home (conversation state, traces) is ``state_dir``; the knowledge base, models and
    business facts stay the service's."""
    business = operator_business_info(settings)
    overrides: dict[str, Any] = {
        "home": str(state_dir),
        "kb_uri": kb or settings.kb_location(),
        "model_cache": str(settings.model_cache_dir()),
        "model_store": settings.model_store_uri(),
        "user_burst": 0, "account_burst": 0,  # a question file is a burst by design
        "answer_cache": False,
        "trace_exporter": "none",
        **({"business_info": str(business)} if business is not None else {}),
        **(extra or {}),
    }
    if account not in load_settings(**overrides).account_map():
        if account != "default":
            raise ConfigurationError(f"no account named {account!r} (WXA_ACCOUNTS, or the development account)")
        # No account configured: a development account of the evaluation's own (plain mode,
        # nothing leaves this process).
        ensure_dev_credentials(state_dir)
        overrides["environment"] = "development"
    return overrides


class InProcessService:
    """The ingress with retrieve and generate in this process (decrypt, intent and encrypt
    in its fused mode), for questions that are answered, not delivered."""

    def __init__(self, overrides: dict[str, Any]):
        from functions.generate.deployment import GenerateServer
        from functions.retrieve.deployment import RetrieveServer
        from functions.cli.service import ensure_model
        from functions.ingress.deployment import Ingress
        from functions.ingress.handles import InProcessHandle

        settings = load_settings(**overrides)
        ensure_model(settings)
        self._retrieve = RetrieveServer(overrides)
        self._generate = GenerateServer(settings_overrides=overrides)
        self.ingress = Ingress(None, None, InProcessHandle(self._retrieve), InProcessHandle(self._generate), None,
                               None, overrides)
        self.window_s = settings.delivery_window_s

    def close(self) -> None:
        self._generate.close()
        self._retrieve.close()


async def answer_all(service: InProcessService, account: str, questions: Sequence[LabelledQuestion],
                     concurrency: int, progress: Callable[[], None] = lambda: None) -> list[Outcome]:
    """Every question, ``concurrency`` at a time, each from its own user; in the file's order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, question: LabelledQuestion) -> Outcome:
        message = InboundMessage(account, "gh_eval", f"eval-user-{index}", int(time.time()), "text",
                                 msg_id=f"eval-{index}", content=question.q)
        async with gate:
            started = time.perf_counter()
            reply, details = await service.ingress.evaluate(message)
            latency = time.perf_counter() - started
        progress()
        source = str(details.get("answer_source") or f"reply:{details.get('route', '?')}")
        documents = tuple(details.get("documents") or ())
        return Outcome(question.q, question.docs, str(details.get("route", "?")), source, documents,
                       "".join(reply.parts), round(latency, 3), verdict(question, source, documents))

    return list(await asyncio.gather(*(one(index, question) for index, question in enumerate(questions))))


def evaluate(questions: Sequence[LabelledQuestion], overrides: dict[str, Any], account: str = "default",
             concurrency: int = DEFAULT_CONCURRENCY, progress: Callable[[], None] = lambda: None
             ) -> tuple[list[Outcome], dict]:
    service = InProcessService(overrides)
    try:
        outcomes = asyncio.run(answer_all(service, account, questions, concurrency, progress))
    finally:
        service.close()
    return outcomes, summarise(outcomes, service.window_s)


def _cmd_eval(opts: argparse.Namespace) -> int:
    from tqdm import tqdm

    questions = read_questions(Path(opts.questions))
    settings = load_settings()
    extra = {"wechat_answer_mode": opts.mode} if opts.mode else {}
    with tempfile.TemporaryDirectory(prefix="wxassist-eval-") as state_dir:
        overrides = evaluation_overrides(settings, Path(state_dir), opts.kb, opts.account, extra)
        with tqdm(total=len(questions), desc="questions", file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
            outcomes, summary = evaluate(questions, overrides, opts.account, opts.concurrency, lambda: bar.update(1))
    if opts.html:
        Path(opts.html).write_text(as_html(outcomes, summary, f"wxassist eval: {opts.questions}"), encoding="utf-8")
    if opts.json:
        print(as_json(outcomes, summary))
    else:
        print(as_table(outcomes))
        print()
        print(summary_lines(summary))
        if opts.html:
            print(f"report: {opts.html}")
    return 0


def register_eval_command(commands) -> None:
    run = commands.add_parser("eval", help="answer labelled questions through the real answer path: right, "
                                           "not found, false answers, latency")
    run.add_argument("questions", help='JSONL: {"q": …, "doc": …} or {"q": …, "expect": "not_found"} per line')
    run.add_argument("--kb", help="the knowledge base to answer from (default: the service's)")
    run.add_argument("--account", default="default", help="whose settings (answer mode, FAQ fast path) apply")
    run.add_argument("--mode", choices=("generate", "extract", "auto"),
                     help="answer mode for the default account (default: as configured)")
    run.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="questions answered at once")
    run.add_argument("--json", action="store_true", help="one JSON object: summary and every question")
    run.add_argument("--html", metavar="FILE", help="also write a report a person reads")
    run.set_defaults(handler=_cmd_eval)
