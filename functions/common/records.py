"""Typed records passed between functions. Small frozen dataclasses: cheap to pickle across
Ray Serve handles, and never carrying secrets."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from functions.common.errors import RejectedRequest


class Route(str, enum.Enum):
    """Where the ingress sends a message after intent classification."""

    GREETING = "greeting"
    COMMAND = "command"
    EVENT = "event"
    HANDOFF = "handoff"
    KNOWLEDGE = "knowledge"
    CHITCHAT = "chitchat"
    TOOL = "tool"  # answered by a tool (functions/intent/tools.py), no generation
    UNSUPPORTED = "unsupported"
    ABUSE = "abuse"  # refused: sensitive words, or abuse the classifier recognised
    IGNORE = "ignore"  # nothing to say (unsubscribe, view-link click): answer "success"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A verified, decrypted callback. ``from_user`` is the only trustworthy user identity."""

    account: str
    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    msg_id: str | None = None
    content: str | None = None
    event: str | None = None
    event_key: str | None = None
    agent_id: str | None = None
    encrypted: bool = True

    @property
    def dedupe_key(self) -> tuple[str, str, str]:
        """WeChat redelivers with the same MsgId; events have none, so use CreateTime+Event."""
        if self.msg_id:
            return (self.account, self.from_user, self.msg_id)
        return (self.account, self.from_user, f"{self.create_time}:{self.event or ''}")


@dataclass(frozen=True, slots=True)
class Intent:
    route: Route
    confidence: float
    reason: str
    query: str | None = None  # the text to retrieve/generate for, when the route needs one
    reply: str | None = None  # a canned answer, when no generation is needed
    forget_user: bool = False  # /reset or unsubscribe: drop the user's conversation memory
    # The query's embedding (float32 bytes), when classifying computed it: retrieval reuses it
    # instead of embedding the same text again.
    query_vector: bytes = b""


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a conversation, as the prompt gets it."""

    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Passage:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Quote:
    """The sentences of the knowledge base that answer a question, and where they come from:
    what an extractive answer says (marked to the user as a quote)."""

    text: str
    titles: tuple[str, ...]  # the documents quoted, best first
    documents: tuple[str, ...]  # their sources (paths as ingested)
    score: float = 0.0  # cosine of the question and the best quoted sentence


@dataclass(frozen=True, slots=True)
class Found:
    """What retrieve found for a question: an answer ready without generating (a curated FAQ
    entry, or a cached answer), or the passages to answer from, with the verdict on whether
    they answer the question at all and the quote an extractive answer would give."""

    passages: tuple[Passage, ...] = ()
    answer: str = ""
    kind: str = "passages"  # "faq", "cache" or "passages"
    sources: tuple[str, ...] = ()  # titles the ready answer cites
    documents: tuple[str, ...] = ()  # sources (paths) of the ready answer's documents
    answerable: bool = True  # the passages answer the question (retrieval's evidence says so)
    confidence: float = 0.0  # how sure that verdict is, 0..1
    quote: Quote | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    sources: tuple[str, ...] = ()  # document titles the answer drew on, in rank order
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: bool = False  # stopped at the token budget, not at end of answer
    model: str = ""
    # "generated": the model's text, supported by the passages; "extractive": it was not, so
    # the answer quotes the best passage; "none": no passages (chit-chat); "unanswered": no
    # fit answer and no passage about the question, so ``text`` is empty.
    grounding: str = "none"


@dataclass(frozen=True, slots=True)
class Reply:
    """The HTTP response body for one callback, plus every WeChat-sized part of the answer.

    ``body`` carries ``parts[0]`` (or is ``success`` when there is nothing to say passively);
    the later parts are for the customer-service push path.
    """

    body: str
    parts: tuple[str, ...] = field(default_factory=tuple)
    content_type: str = "application/xml"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request, returned (not raised) across deployment handles so the ingress maps
    it to an HTTP status without relying on exception pickling."""

    http_status: int
    error: str  # the error class name, e.g. "SignatureMismatch"
    reason: str  # safe to log and to return: never content or secrets

    @classmethod
    def of(cls, exc: RejectedRequest) -> Rejection:
        return cls(exc.http_status, type(exc).__name__, exc.reason)


@dataclass(frozen=True)
class Outcome:
    """What one delivery answers: the passive reply, ``success`` (the answer will be pushed,
    or there is nothing to say), or "not yet" (a 503, so WeChat delivers again)."""

    kind: Literal["passive", "success", "not_yet"]
    reply: Reply | None = None
    deliveries: int = 1
    first_trace: str = ""  # a retry: the first delivery's traceparent, to link to
    # A passive reply counted as served by this delivery: what ``retract`` takes back if the
    # reply never left (the handler was cancelled before returning it).
    delivery_id: str = ""
    last: bool = False  # no delivery follows this one

    @property
    def passive_reply(self) -> bool:
        return self.kind == "passive" and self.reply is not None
