"""The ingress's orchestration without Ray (tests/unit/ingress_stack.py)."""

from __future__ import annotations

import threading
import time

from functions.common.clock import SystemClock
from functions.common.ledger import ClaimLedger
from functions.common.outbox import PENDING_QUEUE, OutboxItem
from functions.emulator.platform import PlatformSimulator, event_message_xml, reply_text, text_message_xml
from functions.common.records import InboundMessage
from functions.common.settings import Settings
from functions.common.state import SQLiteStateStore
from functions.decrypt.deployment import DecryptServer
from functions.encrypt.deployment import EncryptServer
from functions.generate.deployment import GenerateServer
from functions.intent.deployment import IntentServer
from functions.ingress.answering import GENERATE_ATTEMPTS
from functions.ingress.deployment import Ingress
from functions.ingress.http import http_app
from tests.fakes import EchoEngine, GatedEngine
from tests.polling import wait_for
from tests.unit.ingress_stack import (POLICY, Broken, FailsFirst, InProcessHandle, ReadyOnly, RetrieveFromList, make_client,
                                     post, queue_full, replica_lost, serving)


class SlowEngine(EchoEngine):
    def __init__(self, seconds: float, answer: str = "青禾家居支持7天无理由退货。"):
        super().__init__(answer=answer)
        self.seconds = seconds

    def complete(self, messages, max_new_tokens):
        time.sleep(self.seconds)
        return super().complete(messages, max_new_tokens)


def deliver_concurrently(client, home, xml: str, count: int, gap_s: float):
    """WeChat's redeliveries of one message: the same signed callback, sent again later."""
    platform = PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock())
    callback = platform.callback(xml)
    responses = [None] * count

    def deliver(index: int) -> None:
        time.sleep(index * gap_s)
        responses[index] = client.post("/wechat/default", params=callback.query, content=callback.body)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def text(content: str) -> str:
    return text_message_xml(to_user="gh", from_user="o-user", content=content, msg_id="7", create_time=int(time.time()))


def test_knowledge_answer_cites_its_source(home):
    _, reply = post(make_client(home), home, text("退货政策是什么"))
    assert reply_text(reply) == "青禾家居支持7天无理由退货。\n\n参考：《退货政策》"


def test_no_passages_means_not_found_without_generating(home):
    generate = GenerateServer(engine_cls=EchoEngine, settings_overrides={"home": str(home)})
    _, reply = post(make_client(home, passages=(), generate=generate), home, text("火星门店"))
    assert reply_text(reply).startswith("抱歉，知识库里没有找到相关内容")
    assert generate._core._engine.calls == []  # no GPU time spent


def test_an_unusable_answer_without_an_on_topic_passage_is_not_found(home):
    _, reply = post(make_client(home, engine_answer="哈" * 50), home, text("火星上有门店吗"))
    assert reply_text(reply).startswith("抱歉，知识库里没有找到相关内容")


def test_a_failing_function_gets_an_apology_not_a_500(home):
    response, reply = post(make_client(home, generate=Broken()), home, text("退货政策是什么"))
    assert response.status_code == 200 and reply_text(reply) == "抱歉，系统暂时繁忙，请稍后再试。"


def test_a_failing_decrypt_is_503_so_wechat_retries(home):
    response, _ = post(make_client(home, decrypt=Broken()), home, text("你好"))
    assert response.status_code == 503 and response.json()["error"] == "Unavailable"


def test_unsubscribe_gets_no_passive_reply(home):
    xml = event_message_xml(to_user="gh", from_user="o-user", event="unsubscribe", create_time=int(time.time()))
    response, reply = post(make_client(home), home, xml)
    assert response.text == "success" and reply == {}


def test_rejections_keep_their_status(home):
    client = make_client(home)
    assert client.post("/wechat/default", params={"timestamp": "1", "nonce": "1"}, content=b"<xml/>").status_code == 403
    oversize = client.post("/wechat/default", params={}, content=b"x" * 70_000)
    assert oversize.status_code == 413 and oversize.json()["error"] == "BodyTooLarge"


def test_a_retry_attaches_to_the_job_in_flight_and_a_late_one_is_served_again(home):
    generate = GenerateServer(engine_cls=SlowEngine, engine_kwargs={"seconds": 1.0}, settings_overrides={"home": str(home)})
    client = make_client(home, generate=generate)
    xml = text("退货政策是什么")
    first, retry = deliver_concurrently(client, home, xml, count=2, gap_s=0.3)
    assert first.status_code == retry.status_code == 200
    assert first.content == retry.content  # byte-identical: the retry got the stored reply
    late, = deliver_concurrently(client, home, xml, count=1, gap_s=0)
    assert late.content == first.content
    assert len(generate._core._engine.calls) == 1  # one job for three deliveries


def slow_client(home, *, window_s: float):
    """The ingress with a generate whose answer waits for the test's gate."""
    gate = threading.Event()
    generate = GenerateServer(engine_cls=GatedEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。", "gate": gate},
                              settings_overrides={"home": str(home)})
    overrides = {"home": str(home), "delivery_window_s": window_s}
    ingress = Ingress(
        InProcessHandle(DecryptServer(overrides)),
        InProcessHandle(IntentServer(overrides)),
        InProcessHandle(RetrieveFromList([POLICY])),
        InProcessHandle(generate),
        InProcessHandle(EncryptServer(overrides)),
        InProcessHandle(ReadyOnly()),
        overrides,
    )
    return serving(http_app(ingress)), generate, gate


def answered(home, msg_id: str = "7") -> bool:
    """The message's job has recorded its answer in the ledger."""
    ledger = ClaimLedger(SQLiteStateStore(home / "state.db"), SystemClock(), ttl_s=3600, job_lease_s=60)
    entry = ledger.lookup(InboundMessage("default", "gh", "o-user", 0, "text", msg_id=msg_id).dedupe_key)
    return entry is not None and entry.state == "done"


def test_deliveries_that_outlive_their_window_ask_wechat_to_deliver_again(home):
    client, generate, gate = slow_client(home, window_s=0.5)
    xml = text("退货政策是什么")
    first, second = deliver_concurrently(client, home, xml, count=2, gap_s=0.2)
    assert first.status_code == second.status_code == 503  # not an empty 200: that stops WeChat
    assert first.json()["error"] == "InProgress"
    gate.set()  # the job finishes; WeChat's next delivery gets the answer passively
    wait_for(lambda: answered(home))
    third, = deliver_concurrently(client, home, xml, count=1, gap_s=0)
    assert third.status_code == 200 and "7天无理由退货" in reply_text(open_with(home, third))
    assert len(generate._core._engine.calls) == 1


def test_the_last_delivery_hands_the_answer_to_the_outbox(home):
    client, generate, gate = slow_client(home, window_s=0.3)
    responses = deliver_concurrently(client, home, text("退货政策是什么"), count=3, gap_s=0.4)
    assert [r.status_code for r in responses] == [503, 503, 200]
    assert responses[2].text == "success"  # the third and last: no more deliveries will come
    gate.set()  # the job finishes in the ingress's loop and pushes instead of serving
    store = SQLiteStateStore(home.resolve() / "state.db")
    wait_for(lambda: store.queue_size(PENDING_QUEUE) > 0, what="the push")
    (item_id, payload), = store.lease(PENDING_QUEUE, now_s=time.time() + 1, lease_s=30, limit=10)
    pushed = OutboxItem.from_json(payload)
    assert pushed.to_user == "o-user" and pushed.text.startswith("青禾家居支持7天无理由退货")
    assert len(generate._core._engine.calls) == 1


def open_with(home, response):
    return PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock()).open_reply(response.content)


class SlowDecrypt(DecryptServer):
    """A busy decrypt replica: it holds the callback until the test releases it, so the
    delivery's client gives up before the claim is made."""

    def __init__(self, overrides):
        super().__init__(overrides)
        self.entered = threading.Event()
        self.release = threading.Event()

    def open_callback(self, account, query, body):
        self.entered.set()
        self.release.wait(60)
        return super().open_callback(account, query, body)


def test_a_delivery_cancelled_before_its_claim_still_claims_and_answers(home):
    import asyncio
    from urllib.parse import urlencode

    from starlette.requests import Request

    overrides = {"home": str(home)}
    generate = GenerateServer(engine_cls=EchoEngine, settings_overrides=overrides)
    clock = SystemClock()
    decrypt = SlowDecrypt(overrides)
    ingress = Ingress(
        InProcessHandle(decrypt), InProcessHandle(IntentServer(overrides)),
        InProcessHandle(RetrieveFromList([POLICY])), InProcessHandle(generate),
        InProcessHandle(EncryptServer(overrides)), InProcessHandle(ReadyOnly()), overrides, clock=clock,
    )
    platform = PlatformSimulator(Settings(home=home).account_map()["default"], clock)
    callback = platform.callback(text("退货政策是什么"))

    async def scenario() -> None:
        scope = {"type": "http", "method": "POST", "path": "/wechat/default", "headers": [],
                 "query_string": urlencode(callback.query).encode()}

        async def receive():
            return {"type": "http.request", "body": callback.body, "more_body": False}

        delivery = asyncio.create_task(ingress.callback("default", Request(scope, receive)))
        assert await asyncio.to_thread(decrypt.entered.wait, 60)
        delivery.cancel()  # WeChat hung up; Serve cancels the handler while decrypt is busy
        decrypt.release.set()
        while ingress._tasks:  # the intake, which the hang-up did not cancel
            await asyncio.gather(*ingress._tasks, return_exceptions=True)
        deadline = time.monotonic() + 60
        while ledger.lookup(message.dedupe_key).state == "in_flight":  # the job it started
            assert time.monotonic() < deadline, "the claimed message was never answered"
            await asyncio.sleep(0.05)

    ledger = ClaimLedger(SQLiteStateStore(home / "state.db", clock), clock, ttl_s=3600, job_lease_s=60)
    message = InboundMessage("default", "gh", "o-user", 0, "text", msg_id="7")
    asyncio.run(scenario())
    entry = ledger.lookup(message.dedupe_key)
    assert entry.state == "done" and entry.parts  # claimed and answered all the same
    assert len(generate._core._engine.calls) == 1


def test_a_full_generate_queue_gets_a_friendly_notice_and_the_answer_is_pushed_later(home):
    generate = FailsFirst(home, 3, queue_full)  # the first call, then two retries, find it full
    response, reply = post(make_client(home, generate=generate), home, text("退货政策是什么"))
    assert response.status_code == 200 and reply_text(reply) == Settings().busy_push_text
    store = SQLiteStateStore(home.resolve() / "state.db")
    deadline = time.monotonic() + 10
    while not (items := store.lease(PENDING_QUEUE, now_s=time.time() + 1, lease_s=30, limit=10)):
        assert time.monotonic() < deadline, "the deferred answer never reached the outbox"
        time.sleep(0.1)
    (item_id, payload), = items
    pushed = OutboxItem.from_json(payload)
    assert pushed.to_user == "o-user" and pushed.text.startswith("青禾家居支持7天无理由退货")
    assert item_id.startswith("deferred-") and generate.failures == 0


def test_a_passive_only_account_is_told_to_come_back_for_a_deferred_answer(home):
    overrides = {"wechat_strategy": "passive-only"}
    client = make_client(home, generate=FailsFirst(home, 1, queue_full), overrides=overrides)
    _, reply = post(client, home, text("退货政策是什么"))
    assert reply_text(reply) == Settings().busy_held_text
    # "继续" fetches it: the question is marked pending, so it waits for the deferred answer.
    _, fetched = post(client, home, text_message_xml(to_user="gh", from_user="o-user", content="继续", msg_id="8",
                                                     create_time=int(time.time())))
    assert reply_text(fetched) == "（接上条：退货政策是什么）\n青禾家居支持7天无理由退货。\n\n参考：《退货政策》"


def test_an_answer_lost_with_its_replica_is_generated_again_on_a_live_one(home):
    generate = FailsFirst(home, GENERATE_ATTEMPTS - 1, replica_lost)  # the replica, then its replacement
    _, reply = post(make_client(home, generate=generate), home, text("退货政策是什么"))
    assert reply_text(reply) == "青禾家居支持7天无理由退货。\n\n参考：《退货政策》"
    assert generate.failures == 0 and len(generate.inner._core._engine.calls) == 1


def test_replicas_lost_past_the_attempts_get_an_apology(home):
    generate = FailsFirst(home, GENERATE_ATTEMPTS, replica_lost)
    response, reply = post(make_client(home, generate=generate), home, text("退货政策是什么"))
    assert response.status_code == 200 and reply_text(reply) == Settings().failure_text
    assert generate.inner._core._engine.calls == []


def test_the_fused_ingress_runs_decrypt_intent_and_encrypt_itself(home):
    """pipeline_mode=fused: compose_app passes no handles for the cheap steps, and the
    ingress builds them in its own process; the answer is the same."""
    overrides = {"home": str(home)}
    generate = GenerateServer(engine_cls=EchoEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"},
                              settings_overrides=overrides)
    ingress = Ingress(None, None, InProcessHandle(RetrieveFromList([POLICY])), InProcessHandle(generate), None,
                      InProcessHandle(ReadyOnly()), overrides)
    import asyncio

    asyncio.run(ingress.warm_up())
    _, reply = post(serving(http_app(ingress)), home, text("退货政策是什么"))
    assert reply_text(reply) == "青禾家居支持7天无理由退货。\n\n参考：《退货政策》"


def test_an_inline_handle_calls_on_the_event_loop_and_a_plain_one_in_a_thread():
    """Fused mode calls decrypt and encrypt inline: a thread hop costs more than they do.
    Intent stays on a thread, since its kNN step embeds the question."""
    import asyncio

    class WhereAmI:
        def where(self, tag: str) -> tuple[str, int]:
            return tag, threading.get_ident()

    async def both() -> tuple[int, tuple[str, int], tuple[str, int]]:
        return (threading.get_ident(), await InProcessHandle(WhereAmI(), inline=True).where.remote("inline"),
                await InProcessHandle(WhereAmI()).where.remote("thread"))

    loop_thread, inline, threaded = asyncio.run(both())
    assert inline == ("inline", loop_thread)
    assert threaded[0] == "thread" and threaded[1] != loop_thread


def test_a_handler_cancelled_after_its_reply_was_ready_takes_its_serving_back(home):
    """WeChat hangs up in the instant the passive reply is ready: the handler is cancelled
    before it returns the reply, so the reply must not count as served. WeChat's next
    delivery then gets it."""
    import asyncio
    from urllib.parse import urlencode

    from starlette.requests import Request

    from functions.common.ledger import ClaimLedger
    from functions.common.records import InboundMessage

    overrides = {"home": str(home)}
    ingress = Ingress(
        InProcessHandle(DecryptServer(overrides)), InProcessHandle(IntentServer(overrides)),
        InProcessHandle(RetrieveFromList([POLICY])), InProcessHandle(GenerateServer(engine_cls=EchoEngine,
                                                                                    settings_overrides=overrides)),
        InProcessHandle(EncryptServer(overrides)), InProcessHandle(ReadyOnly()), overrides,
    )
    callback = PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock()).callback(text("退货政策是什么"))
    scope = {"type": "http", "method": "POST", "path": "/wechat/default", "headers": [],
             "query_string": urlencode(callback.query).encode()}

    async def receive():
        return {"type": "http.request", "body": callback.body, "more_body": False}

    ledger = ClaimLedger(SQLiteStateStore(home / "state.db"), SystemClock(), ttl_s=3600, job_lease_s=60)
    key = InboundMessage("default", "gh", "o-user", 0, "text", msg_id="7").dedupe_key

    async def scenario():
        handler = asyncio.ensure_future(ingress.callback("default", Request(scope, receive)))
        await asyncio.sleep(0)
        intake, = ingress._tasks  # the delivery's shielded intake
        # Serve cancels the handler after the intake finished, before the handler resumes.
        intake.add_done_callback(lambda _: handler.cancel())
        try:
            await handler
            raise AssertionError("the handler was not cancelled")
        except asyncio.CancelledError:
            pass
        _, (_, outcome) = intake.result()
        assert outcome.passive_reply  # the reply was ready, and counted served for a moment
        while ingress._tasks:  # the retraction runs on its own
            await asyncio.gather(*ingress._tasks)
        assert not ledger.lookup(key).served
        return await ingress.callback("default", Request(scope, receive))  # WeChat delivers again

    again = asyncio.run(scenario())
    assert again.status_code == 200 and ledger.lookup(key).served
    reply = PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock()).open_reply(again.body)
    assert reply_text(reply) == "七天无理由退货。\n\n参考：《退货政策》"
