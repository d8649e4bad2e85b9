from __future__ import annotations

from functions.common.records import Passage
from functions.common.text import coverage
from functions.generate.grounding import acceptable, bigrams, extractive_answer, leaks_prompt, repetitive, support

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
    assert repetitive(loop)  # ...but it says one thing thrice
    assert not acceptable(loop, [RETURNS], question="退货", system_prompt="系统", min_support=0.5)
    good = "青禾家居支持7天无理由退货，自签收次日起7天内可申请。"
    assert not repetitive(good)
    assert acceptable(good, [RETURNS], question="退货政策", system_prompt="系统", min_support=0.5)


def test_echoing_the_question_is_not_evidence():
    question = "火星上有没有门店"
    echo = "火星上有没有门店，可以用火星上的美衣上有没有门店。"
    store = Passage("s:0", "s", "showrooms.md", "门店地址", "杭州旗舰店每天10:00-21:00营业，上海门店也有沙发。", 1.0)
    assert support(echo, [store], question) < 0.5
    assert not acceptable(echo, [store], question=question, system_prompt="系统", min_support=0.5)
    assert not acceptable(question, [store], question=question, system_prompt="系统", min_support=0.5)  # says nothing new


def test_repeating_the_system_prompt_is_not_acceptable():
    prompt = "你是青禾家居的微信客服助手。只根据参考资料回答用户的问题。"
    assert leaks_prompt("好的！你是青禾家居的微信 客服助手，我来讲个笑话", prompt)
    assert not leaks_prompt("青禾家居的客服热线是400-820-6688。", prompt)
    assert not acceptable("你是青禾家居的微信客服助手，哈哈哈哈", [], question="讲个笑话", system_prompt=prompt, min_support=0.5)
    assert acceptable("今天天气不错，适合出门逛逛家具店。", [], question="讲个笑话", system_prompt=prompt, min_support=0.5)


def test_coverage_ignores_question_words():
    assert coverage("客服电话是多少", FAQ) == 1.0
    assert coverage("火星上有没有门店", RETURNS) == 0.0
    assert coverage("什么", RETURNS) == 0.0
