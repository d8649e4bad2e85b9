"""Continuations: how a ``passive-only`` account delivers what one passive reply cannot carry.

An unverified Official Account has no customer-service API, so the passive reply is the only
way to reach the user. The first part of an answer goes back passively with a hint ("回复
“继续”查看后续"); the rest is held here per (account, user). When the answer is not ready by
WeChat's last delivery, that delivery says so and the whole answer is held once it is done.

The user fetches held parts by sending exactly the continue keyword. Any other message is a
new question and is answered as one: nothing held is handed out in its place, which is how
the popular "send anything to get your answer" bots swallow the user's next question.

Several answers may be held at once (a user asks again before fetching the rest); "继续"
serves the most recent one first, and every continued part is labelled with the question it
answers, so a user never mistakes one answer for another. Keys hold a hash of the user id.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from functions.common.clock import Clock
from functions.common.records import InboundMessage
from functions.common.state import StateStore, update_value, user_digest

KEY_PREFIX = "wxa:continue:"
MAX_HELD_ANSWERS = 5  # per user: a bound on what one user can make the store keep
LABEL_CHARS = 12
LABEL_BYTES = 36  # a label is cut to both: 12 CJK characters, fewer 4-byte ones
LABEL_PREFIX = "（接上条："
# Room left in every part for the label and its wrapper, and the hint.
LABEL_RESERVE_BYTES = LABEL_BYTES + 32


@dataclass(frozen=True)
class HeldAnswer:
    job_id: str
    label: str  # the start of the question this answers
    since_s: float
    parts: tuple[str, ...] = ()
    pending: bool = False  # the job was still running at the last delivery


@dataclass(frozen=True)
class NextPart:
    """What "继续" gets: a held part, word that the answer is still being prepared, or none."""

    kind: Literal["part", "pending", "none"]
    text: str = ""
    label: str = ""
    remaining: int = 0  # parts still held for this answer after this one


@dataclass(frozen=True)
class _Held:
    answers: tuple[HeldAnswer, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps([asdict(answer) for answer in self.answers], ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> _Held:
        return cls(tuple(HeldAnswer(**{**item, "parts": tuple(item["parts"])}) for item in json.loads(raw)))


def continuation_key(account: str, user: str) -> str:
    return f"{KEY_PREFIX}{account}:{user_digest(user)}"


def question_label(message: InboundMessage) -> str:
    text = " ".join((message.content or message.event_key or message.msg_type).split())
    if len(text) <= LABEL_CHARS and len(text.encode("utf-8")) <= LABEL_BYTES:
        return text
    clipped = text[:LABEL_CHARS].encode("utf-8")[: LABEL_BYTES - 3].decode("utf-8", "ignore")
    return clipped + "…"


def _normalised(text: str) -> str:
    """NFKC (full-width to half-width), lower case, without spaces or punctuation."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(char for char in folded if unicodedata.category(char)[0] not in "PZSC")


def is_continue_request(message: InboundMessage, keyword: str) -> bool:
    """Only the keyword itself ("继续", "继续。", " 继续！") asks for the rest."""
    return message.msg_type == "text" and bool(message.content) and _normalised(message.content) == _normalised(keyword)


def continued_text(part: NextPart, hint: str) -> str:
    """A held part as the user sees it: which question it continues, and whether more follow."""
    # A part that already names its question (a "继续" reply that was itself held) keeps it.
    text = part.text if part.text.startswith(LABEL_PREFIX) else f"{LABEL_PREFIX}{part.label}）\n{part.text}"
    return f"{text}\n\n{hint}" if part.remaining and not text.endswith(hint) else text


def hint_reserve_bytes(hint: str) -> int:
    return LABEL_RESERVE_BYTES + len(f"\n\n{hint}".encode("utf-8"))


class ContinuationStore:
    """Held answers per (account, user), updated by compare-and-set: replicas share them."""

    def __init__(self, store: StateStore, clock: Clock, *, ttl_s: float, pending_stale_s: float):
        self._store = store
        self._clock = clock
        self._ttl_s = ttl_s
        self._pending_stale_s = pending_stale_s

    def expect(self, message: InboundMessage, job_id: str) -> None:
        """The job in flight will hold its whole answer: "继续" should wait for it."""
        pending = HeldAnswer(job_id, question_label(message), self._clock.now_s(), pending=True)
        self._update(message, lambda held: held if _find(held, job_id) is not None else _append(held, pending))

    def hold(self, message: InboundMessage, job_id: str, parts: tuple[str, ...]) -> None:
        """Keep ``parts`` for "继续", replacing the job's pending mark (whichever came first)."""
        ready = HeldAnswer(job_id, question_label(message), self._clock.now_s(), parts=tuple(parts))

        def change(held: _Held) -> _Held:
            index = _find(held, job_id)
            if index is None:
                return _append(held, ready) if parts else held
            answers = list(held.answers)
            if parts:
                answers[index] = replace(ready, since_s=answers[index].since_s)
            else:
                del answers[index]
            return _Held(tuple(answers))

        self._update(message, change)

    def take(self, message: InboundMessage) -> NextPart:
        """Hand out the next part of the most recent held answer."""
        taken: list[NextPart] = []

        def change(held: _Held) -> _Held:
            taken.clear()
            now_s = self._clock.now_s()
            answers = [a for a in held.answers if not a.pending or now_s - a.since_s < self._pending_stale_s]
            if not answers:
                taken.append(NextPart("none"))
                return _Held(())
            latest = answers[-1]
            if latest.pending:
                taken.append(NextPart("pending", label=latest.label))
                return _Held(tuple(answers))
            rest = latest.parts[1:]
            taken.append(NextPart("part", latest.parts[0], latest.label, remaining=len(rest)))
            answers[-1:] = [replace(latest, parts=rest)] if rest else []
            return _Held(tuple(answers))

        self._update(message, change)
        return taken[0] if taken else NextPart("none")

    def forget(self, message: InboundMessage) -> None:
        self._store.delete(continuation_key(message.account, message.from_user))

    def held(self, message: InboundMessage) -> tuple[HeldAnswer, ...]:
        raw = self._store.get(continuation_key(message.account, message.from_user))
        return () if raw is None else _Held.from_json(raw).answers

    def _update(self, message: InboundMessage, change) -> None:
        def changed(raw: str | None) -> str | None:
            updated = change(_Held() if raw is None else _Held.from_json(raw))
            # An emptied record stays as "[]" until it expires: deleting is not compare-and-set.
            return None if raw is None and not updated.answers else updated.to_json()

        update_value(self._store, continuation_key(message.account, message.from_user), changed, self._ttl_s)


def _find(held: _Held, job_id: str) -> int | None:
    return next((index for index, answer in enumerate(held.answers) if answer.job_id == job_id), None)


def _append(held: _Held, answer: HeldAnswer) -> _Held:
    """Newest last; past the bound the oldest answer goes."""
    return _Held((*held.answers, answer)[-MAX_HELD_ANSWERS:])
