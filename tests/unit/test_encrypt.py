from __future__ import annotations

import pytest

from functions.common.clock import FixedClock, SecureRandom
from functions.common.continuation import hint_reserve_bytes
from functions.emulator.platform import PlatformSimulator
from functions.common.records import InboundMessage
from functions.encrypt.core import (
    WECHAT_TEXT_LIMIT_BYTES,
    ReplySealer,
    render_answer_text,
    split_for_wechat,
)

NOW_S = 1_763_700_000


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def inbound(encrypted: bool = True, account: str = "default") -> InboundMessage:
    return InboundMessage(account, "gh_official", "o-user", NOW_S, "text", msg_id="9", content="q", encrypted=encrypted)


def test_short_text_is_one_part():
    assert split_for_wechat("退货政策：7天无理由。") == ["退货政策：7天无理由。"]


def test_long_chinese_splits_on_sentence_ends_within_the_limit():
    sentence = "青禾家居支持七天无理由退货，商品需保持完好。"  # 22 chars, 66 bytes
    text = sentence * 100
    parts = split_for_wechat(text)
    assert len(parts) > 1
    assert all(size(part) <= WECHAT_TEXT_LIMIT_BYTES for part in parts)
    assert all(part.endswith("。") for part in parts)
    assert "".join(parts) == text


def test_a_sentence_longer_than_a_part_is_cut_on_characters():
    text = "长" * 1000  # 3000 bytes, no boundary at all
    parts = split_for_wechat(text)
    assert [size(part) for part in parts] == [2046, 954]
    assert "".join(parts) == text


def test_code_blocks_are_never_split_when_they_fit():
    prose = "说明。" * 300  # 2700 bytes of prose before the block
    code = "```python\n" + "print('hi')\n" * 60 + "```"
    parts = split_for_wechat(prose + "\n" + code + "\n结束。")
    assert sum(part.count("```") for part in parts) == 2
    holder = next(part for part in parts if "```" in part)
    assert code in holder
    assert all(size(part) <= WECHAT_TEXT_LIMIT_BYTES for part in parts)


def test_a_code_block_bigger_than_a_part_is_refenced_in_each_part():
    code = "```python\n" + "".join(f"value_{i} = {i}\n" for i in range(400)) + "```"
    parts = split_for_wechat(code)
    assert len(parts) > 1
    for part in parts:
        assert part.startswith("```python\n") and part.endswith("```")
        assert size(part) <= WECHAT_TEXT_LIMIT_BYTES
    body = "".join(part[len("```python\n") : -len("\n```")] + "\n" for part in parts)
    assert body == code[len("```python\n") : -len("```")]


def test_markdown_emphasis_and_headings_are_dropped_outside_code():
    text = "## 退货\n**7天**无理由，__免费__上门。\n```python\n# comment **kept**\n```"
    assert render_answer_text(text, ()) == "退货\n7天无理由，免费上门。\n```python\n# comment **kept**\n```"


def test_answer_text_cites_sources_once_in_order():
    text = render_answer_text("可以退货。", ("退货政策", "退款时效", "退货政策"))
    assert text == "可以退货。\n\n参考：《退货政策》、《退款时效》"
    assert render_answer_text("你好", ()) == "你好"


@pytest.fixture
def sealer(mp_account) -> ReplySealer:
    return ReplySealer({"default": mp_account}, FixedClock(NOW_S), SecureRandom())


def test_encrypted_reply_swaps_to_and_from_and_opens(sealer, mp_account):
    reply = sealer.text_reply(inbound(), "答案 ]]> <b>&amp;")
    fields = PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)
    assert fields["ToUserName"] == "o-user" and fields["FromUserName"] == "gh_official"
    assert fields["Content"] == "答案 ]]> <b>&amp;"
    assert fields["MsgType"] == "text" and fields["CreateTime"] == str(NOW_S)


def test_control_characters_from_the_model_do_not_break_the_xml(sealer, mp_account):
    reply = sealer.text_reply(inbound(), "a\x00b\x1bc")
    assert PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)["Content"] == "abc"


def test_plain_mode_reply_is_plain_xml(sealer):
    reply = sealer.text_reply(inbound(encrypted=False), "你好")
    assert reply.body.startswith("<xml><ToUserName><![CDATA[o-user]]>") and "<Encrypt>" not in reply.body


def test_long_answer_keeps_every_part_and_sends_the_first(sealer, mp_account):
    text = "这是一个很长的回答。" * 300
    reply = sealer.text_reply(inbound(), text)
    assert len(reply.parts) > 1 and "".join(reply.parts) == text
    assert PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)["Content"] == reply.parts[0]


def test_empty_answer_means_no_passive_reply(sealer):
    assert sealer.text_reply(inbound(), "   ").body == "success"


def test_handoff_is_a_transfer_for_official_accounts_and_text_for_wecom(mp_account, wecom_account):
    sealer = ReplySealer({"default": mp_account, "corp": wecom_account}, FixedClock(NOW_S), SecureRandom())
    mp_reply = PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(sealer.handoff_reply(inbound(), "请稍候").body)
    assert mp_reply["MsgType"] == "transfer_customer_service"
    wecom_reply = PlatformSimulator(wecom_account, FixedClock(NOW_S)).open_reply(
        sealer.handoff_reply(inbound(account="corp"), "请稍候").body
    )
    assert wecom_reply["MsgType"] == "text" and wecom_reply["Content"] == "请稍候"


HINT = "（内容较长，回复“继续”查看后续）"


@pytest.fixture
def passive_only_sealer(mp_account) -> ReplySealer:
    account = mp_account.model_copy(update={"strategy": "passive-only"})
    return ReplySealer({"default": account}, FixedClock(NOW_S), SecureRandom(), continue_hint=HINT)


def test_passive_only_first_part_tells_the_user_to_reply_continue(passive_only_sealer, mp_account):
    text = "这是一个很长的回答。" * 300
    reply = passive_only_sealer.text_reply(inbound(), text)
    shown = PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)["Content"]
    assert shown == f"{reply.parts[0]}\n\n{HINT}" and size(shown) <= WECHAT_TEXT_LIMIT_BYTES
    assert "".join(reply.parts) == text
    assert all(size(part) <= WECHAT_TEXT_LIMIT_BYTES - hint_reserve_bytes(HINT) for part in reply.parts)


def test_passive_only_short_answer_has_no_hint(passive_only_sealer, mp_account):
    reply = passive_only_sealer.text_reply(inbound(), "七天无理由退货。")
    assert PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)["Content"] == "七天无理由退货。"


def test_a_held_part_is_sealed_as_it_is_and_an_oversized_one_is_refused(passive_only_sealer, mp_account):
    held = "（接上条：退货？）\n第二段。\n\n" + HINT
    reply = passive_only_sealer.part_reply(inbound(), held)
    assert PlatformSimulator(mp_account, FixedClock(NOW_S)).open_reply(reply.body)["Content"] == held
    with pytest.raises(ValueError, match="over WeChat"):
        passive_only_sealer.part_reply(inbound(), "长" * 700)
