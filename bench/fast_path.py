"""How much of a realistic mix of questions is answered without the GPU, and how much faster.

Runs a mixed question set through the real ingress job (in-process: the real intent, retrieve
and generate classes, the sample corpus in a fresh Milvus Lite KB, the demo model on CPU),
one user per question, in order, and records for each how it was answered:

* rule or tool (a greeting, "12*12是多少", "客服电话是多少"),
* FAQ fast path (a close match of a curated question),
* answer cache (a knowledge question asked before, by another user),
* generated (the model ran).

Prints the share answered without generation and the median time of each kind, with the
ratio of generated to fast answers, all measured in this one run.

    .venv/bin/python bench/fast_path.py [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from functions.common.records import InboundMessage
from functions.common.settings import ensure_dev_credentials, load_settings
from observability.logs import quiet_libraries

# A morning's traffic in miniature: the same twenty questions, some small talk, tools, and
# knowledge questions of which several come back from other users.
QUESTIONS = [
    "你好", "退货政策是什么", "你们退货政策是啥？", "可以开发票吗", "怎么开发票", "客服电话是多少",
    "退款多久能到账？", "买多少钱包邮？", "沙发多久能送到？", "定制家具的生产周期是多久？",
    "布艺沙发上的咖啡渍怎么清理？", "12*12是多少", "门店几点开门？", "床垫拆封了还能退吗？",
    "实木餐桌怎么保养？", "大件家具送货上楼收费吗？", "谢谢", "上海的门店地址", "会员积分怎么用？",
    "定制家具的生产周期是多久？", "实木餐桌怎么保养？", "支持分期付款吗？", "沙发保修多久？",
    "布艺沙发上的咖啡渍怎么清理？", "3999减去500等于多少", "可以开发票吗？", "偏远地区能送货吗？",
    "大件家具送货上楼收费吗？", "价格保护怎么申请？", "价格保护怎么申请？",
]


def kind_of(details: dict) -> str:
    grounding = details.get("grounding")
    if grounding in ("faq", "cache"):
        return grounding
    if "tokens_out" in details:
        return "generated"
    return "rule or tool"


async def run(home: Path) -> list[tuple[str, str, float]]:
    from functions.decrypt.deployment import DecryptServer
    from functions.encrypt.deployment import EncryptServer
    from functions.generate.deployment import GenerateServer
    from functions.intent.deployment import IntentServer
    from functions.retrieve.deployment import RetrieveServer
    from functions.cli.kb import ensure_sample_knowledge
    from functions.ingress.deployment import Ingress
    from functions.ingress.handles import InProcessHandle

    overrides = {"home": str(home), "max_new_tokens": 64, "max_passage_chars": 300, "user_burst": 0, "account_burst": 0}
    settings = load_settings(**overrides)
    ensure_dev_credentials(home)
    ensure_sample_knowledge(settings)
    ingress = Ingress(
        InProcessHandle(DecryptServer(overrides)), InProcessHandle(IntentServer(overrides)),
        InProcessHandle(RetrieveServer(overrides)),
        InProcessHandle(GenerateServer(None, {"model_dir": load_settings().model_dir()}, overrides)),
        InProcessHandle(EncryptServer(overrides)), InProcessHandle(object()), overrides,
    )
    results = []
    for number, question in enumerate(QUESTIONS):
        message = InboundMessage("default", "gh", f"bench-user-{number}", int(time.time()), "text",
                                 msg_id=str(number), content=question)
        started = time.perf_counter()
        _, details = await ingress.stages.router.route(message, settings.max_new_tokens)
        results.append((question, kind_of(details), time.perf_counter() - started))
        await asyncio.sleep(0.2)  # let the answer reach the cache, as between real users
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="wxassist-fastpath-") as home:
        results = asyncio.run(run(Path(home)))
    by_kind: dict[str, list[float]] = {}
    for _, kind, seconds in results:
        by_kind.setdefault(kind, []).append(seconds)
    fast = [s for kind, times in by_kind.items() if kind != "generated" for s in times]
    generated = by_kind.get("generated", [])
    summary = {
        "questions": len(results),
        "without_gpu_share": round(len(fast) / len(results), 3),
        "counts": {kind: len(times) for kind, times in by_kind.items()},
        "median_s": {kind: round(statistics.median(times), 3) for kind, times in by_kind.items()},
        "generated_vs_fast_latency": round(statistics.median(generated) / statistics.median(fast), 1)
        if fast and generated else None,
    }
    if opts.json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    for question, kind, seconds in results:
        print(f"{seconds:7.3f} s  {kind:13} {question}")
    print(f"\n{summary['questions']} questions; answered without generating: {summary['without_gpu_share']:.0%}")
    for kind, count in summary["counts"].items():
        print(f"  {kind:13} {count:3}   median {summary['median_s'][kind]:.3f} s")
    print(f"generated answers took {summary['generated_vs_fast_latency']}x the median time of fast ones")


if __name__ == "__main__":
    main()
