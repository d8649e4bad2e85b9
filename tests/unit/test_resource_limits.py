"""What an attacker (or a burst) cannot make the service hold or compute without bound:
questions are cut to ``max_question_chars``; generation is capped; deferred questions and
the outbox have ceilings, past which new questions are turned away politely with nothing
promised, and answers already promised still go out."""

from __future__ import annotations

import time

import pytest

from functions.common.clock import SystemClock
from functions.common.errors import ConfigurationError
from functions.common.outbox import PENDING_QUEUE, Outbox, OutboxItem
from functions.emulator.platform import reply_text, text_message_xml
from functions.common.settings import Settings, load_settings
from functions.common.state import SQLiteStateStore
from functions.generate.deployment import GenerateServer
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import FailsFirst, make_client, post, queue_full, settle


def question(content: str, msg_id: str = "7") -> str:
    return text_message_xml(to_user="gh", from_user="o-user", content=content, msg_id=msg_id, create_time=int(time.time()))


def echo_generate(home) -> GenerateServer:
    return GenerateServer(engine_cls=EchoEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"},
                          settings_overrides={"home": str(home)})


def test_a_long_question_is_cut_before_the_prompt(home):
    generate = echo_generate(home)
    client = make_client(home, generate=generate, overrides={"max_question_chars": 16})
    post(client, home, question("退货政策是什么？" + "尾巴" * 5000))
    (messages, _), = generate._core._engine.calls
    prompt = "".join(message["content"] for message in messages)
    assert "退货政策是什么？" in prompt and "尾巴" * 5 not in prompt


def test_a_full_outbox_turns_new_questions_away_and_generates_nothing(home):
    store = SQLiteStateStore(home.resolve() / "state.db")
    Outbox(store, SystemClock()).put(OutboxItem("earlier:0", "default", "o-other", "an earlier answer", time.time()))
    generate = echo_generate(home)
    _, reply = post(make_client(home, generate=generate, overrides={"outbox_max_pending": 1}), home,
                    question("退货政策是什么？"))
    assert reply_text(reply) == Settings().outbox_full_text and generate._core._engine.calls == []
    assert Outbox(store, SystemClock()).backlog() == 1  # what was promised stays


def test_an_outbox_with_room_answers_as_usual(home):
    _, reply = post(make_client(home, overrides={"outbox_max_pending": 1}), home, question("退货政策是什么？"))
    assert reply_text(reply).startswith("青禾家居支持7天无理由退货")


def test_past_the_deferral_ceiling_a_full_queue_promises_nothing(home):
    generate = FailsFirst(home, 1, queue_full)
    client = make_client(home, generate=generate, overrides={"max_deferred_answers": 0})
    _, reply = post(client, home, question("退货政策是什么？"))
    assert reply_text(reply) == Settings().outbox_full_text
    settle(client)  # a deferred answer would have been generated and queued by now
    store = SQLiteStateStore(home.resolve() / "state.db")
    assert store.lease(PENDING_QUEUE, now_s=time.time() + 1, lease_s=30, limit=10) == []
    assert generate.inner._core._engine.calls == []


@pytest.mark.parametrize("setting", [{"max_new_tokens": 100_000}, {"max_question_chars": 1_000_000}])
def test_generation_and_question_caps_have_ceilings(setting):
    with pytest.raises(ConfigurationError, match=next(iter(setting))):
        load_settings(**setting)
