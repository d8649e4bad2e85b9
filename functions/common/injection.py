"""Instructions hidden in knowledge-base text are removed before the model sees it.

Passages are fenced and labelled as untrusted data in the prompt (``fence_passages``), which
a well-trained model respects; this is the second line for one that does not. A sentence of a
passage that tries to instruct the model ("忽略以上所有指令", "ignore previous instructions",
"你现在是…", chat-template tokens, asks for the system prompt) is dropped from passage texts,
titles and curated FAQ answers: it carries no fact a customer asked for. This matches patterns
(after NFKC and without zero-width characters), so it stops the known forms, not every
possible phrasing: it is the second line behind the fences, not a guarantee.
``tests/fixtures/injection/`` holds the attempts tested.
"""

from __future__ import annotations

import re
import unicodedata

_SENTENCE = re.compile(r"[^。！？!?；;\n]+[。！？!?；;]?|\n")
_INSTRUCTION = re.compile(
    "|".join(
        (
            r"(忽略|无视|忘记|忘掉|不要理会|跳过)(掉)?(你)?(以上|之前|前面|上面|上述|先前|所有|全部|一切)",
            r"(ignore|disregard|forget|override)\s+(all\s+|any\s+)?(the\s+|your\s+)?(previous|prior|above|earlier|preceding|system)",
            r"(你|您)(现在|从现在起|从现在开始)(是|扮演|变成|作为)|从现在(起|开始)[,，]?\s*你",
            r"(扮演|假装你是|pretend (to be|you are)|you are now|act as)",
            r"(系统|system)\s*(提示词?|指令|prompt|message|instructions?)",
            r"(输出|告诉我|显示|泄露|打印|重复|print|reveal|show|repeat)\s*(你的|your)?\s*(初始|原始|全部)?\s*(提示词|指令|prompt|instructions)",
            r"(新的|新)(指令|指示|任务)[:：]|new instructions?\s*[:：]",
            r"<\|?/?\s*(im_start|im_end|system|assistant|user|endoftext)\s*\|?>",
            r"</?think>",
            r"(回复|回答|输出|只说)(用户)?[:：]\s*[\"“「]",
        )
    ),
    re.IGNORECASE,
)


def looks_like_instruction(sentence: str) -> bool:
    """Matched on NFKC text without format characters: "忽\u200b略以上指令" is caught too."""
    folded = "".join(c for c in unicodedata.normalize("NFKC", sentence) if unicodedata.category(c) != "Cf")
    return bool(_INSTRUCTION.search(folded))


def remove_instructions(text: str) -> tuple[str, int]:
    """The text without its instruction-like sentences, and how many there were."""
    removed = 0
    kept: list[str] = []
    for sentence in _SENTENCE.findall(text):
        if sentence.strip() and looks_like_instruction(sentence):
            removed += 1
            continue
        kept.append(sentence)
    return "".join(kept), removed
