"""The ingress without Ray: the real deployment classes behind in-process handles, the real
HTTP app through FastAPI's test client, a fake engine injected into the real GenerateServer
exactly as the builder injects the transformers one."""


from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from functions.common.clock import SystemClock
from functions.emulator.platform import PlatformSimulator
from functions.common.records import Found
from functions.common.settings import Settings
from functions.decrypt.deployment import DecryptServer
from functions.encrypt.deployment import EncryptServer
from functions.generate.deployment import GenerateServer
from functions.intent.deployment import IntentServer
from functions.retrieve.core import Retriever
from functions.retrieve.faq import FaqMatcher
from functions.ingress.deployment import Ingress
from functions.ingress.handles import InProcessHandle
from functions.ingress.http import http_app  # noqa: F401 - re-exported for tests
from tests.fakes import EchoEngine, ListSearch, passage

POLICY = passage("returns", 0, title="退货政策", text="青禾家居支持7天无理由退货，自签收次日起7天内可在小程序申请。")


class RetrieveFromList:
    def __init__(self, passages):
        self._core = Retriever(ListSearch(passages), top_k=3)
        self._faq = FaqMatcher(ListSearch(passages))
        self.remembered: list[tuple[str, str, str]] = []  # what the ingress asked to cache

    def ready(self):
        return True

    def retrieve(self, query, top_k=None):
        return self._core.retrieve(query, top_k)

    def find(self, question, query, faq=True, cache_account=None, question_vector=b""):
        hit = self._faq.match(question) if faq else None
        if hit is not None:
            return Found(answer=hit.answer, kind="faq", sources=(hit.question,))
        return Found(passages=tuple(self.retrieve(query)))

    def remember_answer(self, account, question, answer, sources, passages):
        self.remembered.append((account, question, answer))
        return True


class ReadyOnly:
    def ready(self):
        return True


class Broken:
    """Started fine, then its replica died: every call after start-up fails."""

    def ready(self):
        return True

    def __getattr__(self, name):
        raise RuntimeError("replica died")


class FailsFirst:
    """A generate deployment whose first ``failures`` calls raise ``error()`` as Serve would."""

    def __init__(self, home, failures: int, error):
        self.inner = GenerateServer(engine_cls=EchoEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"},
                                    settings_overrides={"home": str(home)})
        self.failures = failures
        self.error = error

    def ready(self):
        return True

    async def answer(self, *args):
        if self.failures > 0:
            self.failures -= 1
            raise self.error()
        return await self.inner.answer(*args)


def queue_full():
    from ray.serve.exceptions import BackPressureError

    return BackPressureError(num_queued_requests=4, max_queued_requests=4)


def replica_lost():
    from ray.exceptions import ActorDiedError

    return ActorDiedError()


_open_clients: list[TestClient] = []


def serving(app) -> TestClient:
    """One event loop for the client's life, as in a replica: jobs outlive their request."""
    client = TestClient(app)
    client.__enter__()
    _open_clients.append(client)
    return client


def make_client(home, *, engine_answer="青禾家居支持7天无理由退货。", passages=(POLICY,), decrypt=None, generate=None,
                overrides=None, retrieve=None):
    overrides = {"home": str(home), **(overrides or {})}
    generate = generate or GenerateServer(engine_cls=EchoEngine, engine_kwargs={"answer": engine_answer}, settings_overrides=overrides)
    ingress = Ingress(
        InProcessHandle(decrypt or DecryptServer(overrides)),
        InProcessHandle(IntentServer(overrides)),
        InProcessHandle(retrieve or RetrieveFromList(list(passages))),
        InProcessHandle(generate),
        InProcessHandle(EncryptServer(overrides)),
        InProcessHandle(ReadyOnly()),  # push: the ingress only asks whether it is up
        overrides,
    )
    asyncio.run(ingress.warm_up())  # what Serve does before routing traffic to the ingress
    client = serving(http_app(ingress))
    client.ingress = ingress
    return client


def settle(client) -> None:
    """Wait until the ingress's background work (remembering an answer, a deferred answer)
    is done, so what it would have done has been done: a negative check then means it."""
    from tests.polling import wait_for

    wait_for(lambda: not client.ingress.stages.background.tasks, what="the ingress's background work")


def post(client, home, xml: str):
    platform = PlatformSimulator(Settings(home=home).account_map()["default"], SystemClock())
    callback = platform.callback(xml)
    response = client.post("/wechat/default", params=callback.query, content=callback.body)
    return response, (platform.open_reply(response.content) if response.status_code == 200 else None)




def close_open_clients() -> None:
    while _open_clients:
        _open_clients.pop().__exit__(None, None, None)
