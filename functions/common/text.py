"""Character-bigram views of Chinese (and mixed) text, shared by grounding and FAQ matching.

Chinese has no spaces and the demo embedding model is English-first, so overlap of character
bigrams (CJK characters, letters and digits; punctuation and spacing ignored) is the robust,
cheap measure of "says the same thing" this project relies on.
"""

from __future__ import annotations

import math
import re
import unicodedata

TOKEN_CHAR = re.compile(r"[\w\u3400-\u9fff]", re.UNICODE)

# Bigrams of question words and pronouns: two questions sharing only these are not alike.
QUESTION_WORD_BIGRAMS = frozenset(
    {"什么", "怎么", "可以", "有没", "没有", "多少", "是否", "如何", "哪里", "哪些", "为什", "么样", "你们", "我们",
     "请问", "能否", "能不", "不能", "是不", "不是", "么办", "怎样", "多久", "一下", "们的", "我的", "你的"}
)


def bigrams(text: str) -> set[str]:
    chars = TOKEN_CHAR.findall(unicodedata.normalize("NFKC", text).lower())
    return {a + b for a, b in zip(chars, chars[1:])}


def content_bigrams(text: str) -> set[str]:
    return bigrams(text) - QUESTION_WORD_BIGRAMS


def question_similarity(a: str, b: str) -> float:
    """Cosine of the two questions' content-bigram sets: 1.0 for the same question however
    punctuated or phrased around ("你们的…是什么？" vs "…是什么"), low when they share only
    question words."""
    left, right = content_bigrams(a), content_bigrams(b)
    if not left or not right:
        return 0.0
    return len(left & right) / math.sqrt(len(left) * len(right))


# Words that carry no topic: particles, pronouns, question words. For word-level overlap.
STOP_WORDS = frozenset(
    "的 了 吗 呢 啊 吧 呀 是 啥 什么 怎么 怎样 如何 你们 我们 我 你 您 请问 可以 能 能不能 有没有 多少 哪些 哪里 "
    "一下 要 还 谁 吗？ 么".split()
)


def content_words(text: str) -> set[str]:
    """jieba's words of ``text`` without stop words or punctuation."""
    import jieba

    words = jieba.lcut(unicodedata.normalize("NFKC", text).lower())
    return {w for w in words if w.strip() and w not in STOP_WORDS and any(c.isalnum() for c in w)}


def faq_similarity(a: str, b: str) -> float:
    """How surely two questions ask the same thing: the mean of the content-bigram cosine
    (robust to phrasing around the topic) and the content-word cosine (robust to word order
    and to synonyms of the question words: "是啥" for "是什么")."""
    left, right = content_words(a), content_words(b)
    words = len(left & right) / math.sqrt(len(left) * len(right)) if left and right else 0.0
    return 0.5 * question_similarity(a, b) + 0.5 * words


def coverage(question: str, passage) -> float:
    """Share of the question's content bigrams that occur in the passage (a Passage: title and text)."""
    wanted = bigrams(question) - QUESTION_WORD_BIGRAMS
    if not wanted:
        return 0.0
    return len(wanted & bigrams(passage.title + passage.text)) / len(wanted)


_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD_CHAR = re.compile(r"\w")
_NON_CJK_WORD = re.compile(r"[^\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def cjk_share(text: str) -> float:
    """Share of the word characters that are Chinese."""
    letters = len(_WORD_CHAR.findall(text))
    return len(_CJK_CHAR.findall(text)) / letters if letters else 0.0


def question_language(text: str) -> str:
    """"zh" for a Chinese question, else "en": what an engine must be able to write to answer it.
    A run of Latin letters or digits counts as one word, as a Chinese character does: in
    "iPhone 15 能用吗" the product name is two words of five, and the customer expects Chinese."""
    chinese = len(_CJK_CHAR.findall(text))
    other_words = len(_NON_CJK_WORD.findall(text))
    return "zh" if chinese and chinese >= 0.3 * (chinese + other_words) else "en"
