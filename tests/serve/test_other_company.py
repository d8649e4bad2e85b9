"""A company that is not the sample, end to end: its documents in the knowledge base, its
customers' questions signed and encrypted by the platform simulator, through real Ray Serve
and real HTTP, answered inside the first delivery from its own documents only."""

from __future__ import annotations

import time
import zlib

import pytest

from functions.common.clock import SystemClock
from functions.emulator.platform import PlatformSimulator, text_message_xml
from functions.common.settings import Settings

pytestmark = pytest.mark.serve


def ask(service, content: str, msg_id: str) -> tuple[str, str]:
    """The outcome of WeChat's deliveries of one question, and the reply's text."""
    platform = PlatformSimulator(service.account, SystemClock())
    xml = text_message_xml(to_user="gh_other", from_user=f"o-other-{msg_id}", content=content, msg_id=msg_id,
                           create_time=int(time.time()))
    result = platform.deliver(f"{service.base_url}/wechat/default", xml)
    return result.outcome, (result.reply or {}).get("Content", "")


@pytest.mark.parametrize(("question", "title", "fact"), [
    ("押金要交多少", "租车押金", "300 元"),
    ("补个胎多少钱", "维修保养价格", "15 元"),
    ("客服电话是多少", "门店与营业时间", "021-5550-1234"),
])
def test_questions_are_answered_from_this_companys_documents(other_company_service, question, title, fact):
    outcome, reply = ask(other_company_service, question, f"oc-{zlib.crc32(question.encode())}")
    assert outcome == "passive", reply
    assert reply.startswith(f"以下内容摘自《{title}") and fact in reply, reply
    assert "青禾" not in reply and "400-820-6688" not in reply  # neither the sample's facts nor the model's invention


def test_the_samples_topics_are_not_found_here(other_company_service):
    outcome, reply = ask(other_company_service, "沙发保修多久", "oc-sofa")
    assert outcome == "passive" and reply == Settings().no_answer_text


def test_who_are_you_is_a_self_introduction_not_the_samples(other_company_service):
    outcome, reply = ask(other_company_service, "你是谁", "oc-who")
    assert outcome == "passive" and reply.startswith("您好，我是智能客服助手") and "青禾" not in reply
