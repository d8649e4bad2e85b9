from __future__ import annotations

from functions.common.records import Passage
from functions.generate.grounding import acceptable, bigrams, extractive_answer, repetitive, support

RETURNS = Passage(
    "r:0", "r", "returns-policy.md", "退货政策",
    "退货政策\n# 退货政策\n\n青禾家居支持 **7天无理由退货**：自签收次日起 7 天内可申请。\n\n"
    "## 运费由谁承担\n\n- 质量问题：来回运费由青禾家居承担；\n- 无理由退货：小件商品由您承担寄回运费。\n\n"
    "| 品类 | 金额 |\n| --- | --- |\n| 沙发 | 300 元 |",
    1.0,
)
FAQ = Passage("f:0", "f", "faq.jsonl", "客服电话是多少？", "客服电话是多少？\n问：客服电话是多少？\n答：客服热线400-820-6688，每天9:00-21:00。", 1.0)


def test_bigrams_ignore_punctuation_and_case():
    assert bigrams("A-b，退货！") == {"ab", "b退", "退货"}


def test_a_paraphrase_is_supported_and_an_invention_is_not():
    assert support("青禾家居支持7天无理由退货，自签收次日起7天内可申请。", [RETURNS]) == 1.0
    assert support("质量问题的运费由青禾家居承担", [RETURNS]) > 0.8
    assert support("请访问 https://www.example.com/api 获取更多", [RETURNS]) < 0.2
    assert support("", [RETURNS]) == 0.0
    assert support("任何回答", []) == 0.0


def test_short_passages_are_quoted_whole_without_faq_question_or_markup():
    assert extractive_answer("客服电话", [FAQ]) == "客服热线400-820-6688，每天9:00-21:00。"
    quoted = extractive_answer("退货", [RETURNS])
    assert quoted.startswith("青禾家居支持 7天无理由退货：自签收次日起 7 天内可申请。")
    assert "#" not in quoted and "|" not in quoted and "**" not in quoted and "- " not in quoted


def test_long_passages_keep_the_sentences_about_the_question():
    quoted = extractive_answer("运费谁承担", [RETURNS], max_chars=30)
    assert "运费" in quoted and len(quoted) <= 30
    assert extractive_answer("运费", []) == ""


def test_a_copying_loop_is_not_acceptable():
    loop = "**1.青禾家居支持7天无理由退货**\n\n**2.青禾家居支持7天无理由退货**\n\n**3.青禾家居支持7天无理由退货**"
    assert support(loop, [RETURNS]) > 0.5  # supported enough on its own...
    assert repetitive(loop) and not acceptable(loop, [RETURNS], 0.5)  # ...but it says one thing thrice
    assert not repetitive("青禾家居支持7天无理由退货，自签收次日起7天内可申请。")
    assert acceptable("青禾家居支持7天无理由退货，自签收次日起7天内可申请。", [RETURNS], 0.5)
