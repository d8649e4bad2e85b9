"""Conversation memory: the store, the prompt it feeds, and isolation between users."""

from __future__ import annotations

import time

import pytest

from functions.common.clock import FixedClock
from functions.common.memory import ConversationMemory, memory_key
from functions.emulator.platform import event_message_xml, reply_text, text_message_xml
from functions.common.records import Found, InboundMessage, Passage, Turn
from functions.common.state import SQLiteStateStore
from functions.generate.core import Completion, build_messages, recent_turns
from functions.generate.deployment import GenerateServer
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import make_client, post


def message(user: str = "o-user", account: str = "default") -> InboundMessage:
    return InboundMessage(account, "gh", user, 1, "text", msg_id="1", content="q")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_000_000)


@pytest.fixture
def memory(tmp_path, clock) -> ConversationMemory:
    return ConversationMemory(SQLiteStateStore(tmp_path / "state.db", clock), clock, ttl_s=600, max_turns=3)


def test_turns_come_back_oldest_first_and_only_the_newest_are_kept(memory):
    for n in range(5):
        memory.remember(message(), f"问题{n}", f"回答{n}")
    assert memory.recall(message()) == (Turn("问题2", "回答2"), Turn("问题3", "回答3"), Turn("问题4", "回答4"))


def test_memory_is_per_user_and_per_account(memory):
    memory.remember(message("o-alice"), "我叫 Alice", "好的")
    assert memory.recall(message("o-bob")) == ()
    assert memory.recall(message("o-alice", account="other")) == ()
    assert memory_key("default", "o-alice") != memory_key("other", "o-alice")
    assert "o-alice" not in memory_key("default", "o-alice")  # the store holds a hash, not the openid


def test_forget_and_expiry(memory, clock):
    memory.remember(message("o-a"), "q", "a")
    memory.forget(message("o-a"))
    assert memory.recall(message("o-a")) == ()
    memory.remember(message("o-b"), "q", "a")
    clock.advance(601)
    assert memory.recall(message("o-b")) == ()


def test_the_newest_turns_that_fit_the_budget_go_into_the_prompt():
    history = [Turn("一" * 10, "二" * 10), Turn("三" * 10, "四" * 10), Turn("五" * 10, "六" * 10)]
    assert recent_turns(history, budget_tokens=30, count_tokens=len) == history[2:]
    assert recent_turns(history, budget_tokens=45, count_tokens=len) == history[1:]
    assert recent_turns(history, budget_tokens=5, count_tokens=len) == []
    messages = build_messages("系统", "现在的问题", [], 100, history[2:])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "五" * 10 and messages[-1]["content"] == "现在的问题"


# ---- through the ingress ----------------------------------------------------------------

_ids = iter(range(10**6))


def say(client, home, user: str, content: str):
    xml = text_message_xml(to_user="gh", from_user=user, content=content, msg_id=str(next(_ids)), create_time=int(time.time()))
    return reply_text(post(client, home, xml)[1])


def prompts(generate) -> list[list[dict]]:
    return [messages for messages, _ in generate._core._engine.calls]


def recording_client(home, engine_cls=EchoEngine, retrieve=None, **overrides):
    generate = GenerateServer(engine_cls=engine_cls, settings_overrides={"home": str(home), **overrides})
    return make_client(home, generate=generate, overrides=overrides, retrieve=retrieve), generate


def test_a_three_turn_conversation_uses_its_memory(home):
    client, generate = recording_client(home)
    first_reply = say(client, home, "o-user", "退货政策是什么？")
    say(client, home, "o-user", "7天无理由退货怎么申请？")
    say(client, home, "o-user", "签收次日起算吗？")
    third = prompts(generate)[2]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third[1]["content"] == "退货政策是什么？" and third[3]["content"] == "7天无理由退货怎么申请？"
    assert first_reply.startswith(third[2]["content"])  # the answer the user was given


def test_reset_forgets_and_unsubscribe_forgets(home):
    client, generate = recording_client(home)
    say(client, home, "o-user", "退货政策是什么？")
    assert say(client, home, "o-user", "/reset") == "好的，对话已重新开始。"
    say(client, home, "o-user", "7天无理由退货怎么申请？")
    assert len(prompts(generate)[-1]) == 2  # system + this question: nothing remembered
    leave = event_message_xml(to_user="gh", from_user="o-user", event="unsubscribe", create_time=int(time.time()))
    post(client, home, leave)
    say(client, home, "o-user", "签收次日起算吗？")
    assert len(prompts(generate)[-1]) == 2


class ParrotEngine(EchoEngine):
    """Repeats every earlier user turn it was shown: if memory ever mixed users up, another
    user's words would come out of this model's mouth."""

    def complete(self, messages, max_new_tokens):
        self.calls.append((list(messages), max_new_tokens))
        earlier = [m["content"] for m in messages[1:-1] if m["role"] == "user"]
        text = "退货政策：七天无理由。您之前说过：" + "；".join(earlier)
        return Completion(text, 0, len(text), truncated=False)


class RetrieveAboutAnything:
    """A passage about whatever is asked, so every question reaches the model."""

    def ready(self):
        return True

    def remember_answer(self, *args):
        return False

    def find(self, question, query, faq=True, cache_account=None, question_vector=b""):
        return Found(passages=(Passage("policy:0", "policy", "policy.md", "退货政策", f"{query} 七天无理由退货。", 1.0),))


def test_a_thousand_users_never_see_each_others_canaries(home):
    client, generate = recording_client(
        home, ParrotEngine, RetrieveAboutAnything(), min_support=0, max_new_tokens=4096, account_burst=0,
        intent_knn=False,  # memory is under test here; 2,000 MiniLM embeddings would only slow it
    )
    users = [f"o-user-{n:04d}" for n in range(1000)]
    canary = {user: f"CANARY{n:04d}X" for n, user in enumerate(users)}
    replies: dict[str, list[str]] = {user: [] for user in users}
    for user in users:
        replies[user].append(say(client, home, user, f"我的会员号是{canary[user]}，退货政策是什么？"))
    for user in users:
        replies[user].append(say(client, home, user, "退货还要注意什么？"))
    assert len(prompts(generate)) == 2000
    owner_of = {value: user for user, value in canary.items()}
    for messages in prompts(generate):
        seen = {owner_of[c] for c in owner_of if any(c in m["content"] for m in messages)}
        assert len(seen) <= 1, seen  # a prompt carries at most one user's canary: its own
    for user in users:
        leaked = [c for c in owner_of if owner_of[c] != user and any(c in reply for reply in replies[user])]
        assert not leaked, (user, leaked)
    assert canary["o-user-0007"] in replies["o-user-0007"][1]  # memory did work: its own came back


@pytest.mark.parametrize(
    ("question", "searched"),
    [
        ("那运费呢？", "退货政策是什么？ 那运费呢？"),
        ("它多少钱", "退货政策是什么？ 它多少钱"),
        ("可以开发票吗", "可以开发票吗"),  # standalone, however short
        ("那么请问你们的门店营业时间是几点到几点", "那么请问你们的门店营业时间是几点到几点"),  # long enough alone
    ],
)
def test_only_a_short_follow_up_is_searched_with_the_question_before_it(question, searched):
    from functions.ingress.conversation import retrieval_query

    assert retrieval_query(question, (Turn("退货政策是什么？", "七天。"),)) == searched
    assert retrieval_query(question, ()) == question
