"""One error hierarchy for wxassist.

    WxAssistError
    ├── ConfigurationError          settings that cannot work (bad AES key, unknown account kind)
    ├── RejectedRequest             a callback we refuse; carries the HTTP status to answer with
    │   ├── UnknownAccount              404  no such account configured
    │   ├── BodyTooLarge                413  body over the cap, refused before parsing
    │   ├── MalformedRequest            400  missing query fields, bad XML, missing Encrypt
    │   │   └── ForbiddenXml                 DOCTYPE / ENTITY declarations
    │   ├── SignatureMismatch           403  signature or msg_signature does not verify
    │   ├── StaleTimestamp              403  timestamp outside the freshness window
    │   ├── DecryptionFailed            400  bad base64, block size, padding, length, UTF-8
    │   └── AppIdMismatch               403  plaintext addressed to another appid / corp id
    ├── KnowledgeBaseError          the knowledge base cannot be opened or used
    │   ├── KnowledgeBaseBusy           Milvus Lite file held by another process
    │   └── KnowledgeBaseMismatch       built with another embedder: rebuild it
    ├── ModelError                  model files missing or unusable
    │   └── ModelStoreError             a stored version missing, incomplete or not matching its manifest
    └── StateContention             a shared record kept changing under compare-and-set

Errors become user-facing text or HTTP statuses only at the edges (the ingress and the CLI).
A rejection's ``reason`` is safe to log: it never contains message content or secrets.
"""

from __future__ import annotations


class WxAssistError(Exception):
    """Base of every error wxassist raises on purpose."""


class ConfigurationError(WxAssistError):
    pass


class RejectedRequest(WxAssistError):
    http_status = 400

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnknownAccount(RejectedRequest):
    http_status = 404


class BodyTooLarge(RejectedRequest):
    http_status = 413


class MalformedRequest(RejectedRequest):
    http_status = 400


class ForbiddenXml(MalformedRequest):
    pass


class SignatureMismatch(RejectedRequest):
    http_status = 403


class StaleTimestamp(RejectedRequest):
    http_status = 403


class DecryptionFailed(RejectedRequest):
    http_status = 400


class AppIdMismatch(RejectedRequest):
    http_status = 403


class KnowledgeBaseError(WxAssistError):
    pass


class KnowledgeBaseMismatch(KnowledgeBaseError):
    """The collection's vectors come from another embedder than the configured one."""


class KnowledgeBaseBusy(KnowledgeBaseError):
    pass


class ModelError(WxAssistError):
    pass


class StateContention(WxAssistError):
    """A shared record kept changing under compare-and-set; the caller may retry later."""


class ModelStoreError(ModelError):
    """A model version that is missing, incomplete or does not match its manifest."""
