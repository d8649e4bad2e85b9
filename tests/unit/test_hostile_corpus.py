"""The hostile corpus (tests/fixtures/hostile/cases.json) against the real HTTP app: each case
gets the 4xx it names, an empty reply, or one ordinary reply; never a 500, never a second
answer, never a hang. The app is the ingress over in-process functions (ingress_stack.py)."""

from __future__ import annotations

import base64
import json
import struct
import time
from pathlib import Path

import pytest

from functions.common.clock import SystemClock
from functions.emulator.platform import Callback, PlatformSimulator
from functions.common.settings import Settings
from functions.common.wechat_crypto import sha1_signature
from functions.generate.deployment import GenerateServer
from tests.fakes import EchoEngine
from tests.unit.ingress_stack import make_client

HOSTILE = Path(__file__).resolve().parents[1] / "fixtures" / "hostile"
CASES = json.loads((HOSTILE / "cases.json").read_text())["cases"]
# Not a speed target (bench/ has those): a guard against a case that hangs or crawls. A
# delivery answers within its window (4.5 s) whatever happens behind it, so only a crawl in the
# ingress's own reading of the case goes past this, while a loaded 2-core machine does not.
HANG_GUARD_S = 15.0
PLAIN_QUESTION = ("<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[o-hostile-replay]]></FromUserName>"
                  "<CreateTime>1763700000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                  "<Content><![CDATA[退货政策是什么？]]></Content><MsgId>900100</MsgId></xml>")


def with_query(callback: Callback, **changes: str) -> Callback:
    return Callback({**callback.query, **changes}, callback.body)


def badly_padded(key: bytes, message: bytes) -> str:
    """WeChat's payload, with padding bytes that disagree with their count."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    payload = b"0123456789abcdef" + struct.pack(">I", len(message)) + message
    pad = 32 - len(payload) % 32
    padded = payload + bytes([pad]) * (pad - 1) + bytes([pad - 1 if pad > 1 else 2])
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def changed_callback(change: str, platform: PlatformSimulator, token: str, key: bytes) -> Callback:
    """A valid callback, then one hostile change."""
    valid = platform.callback(PLAIN_QUESTION)
    now = int(valid.query["timestamp"])
    encrypted = valid.body.split(b"<Encrypt><![CDATA[")[1].split(b"]]>")[0].decode()
    if change == "bad_padding":
        return platform.envelope_callback(badly_padded(key, PLAIN_QUESTION.encode()))
    if change == "truncate_ciphertext":
        return platform.envelope_callback(encrypted[:-24])
    if change == "wrong_appid":
        return platform.sealed_callback(PLAIN_QUESTION.encode(), receive_id="wx0000000000000000")
    if change == "stale_timestamp":
        return resigned(valid, token, encrypted, timestamp=str(now - 301))
    if change == "future_timestamp":
        return resigned(valid, token, encrypted, timestamp=str(now + 301))
    if change == "resplit_timestamp_and_nonce":
        # The signed string has no separators: the timestamp's last digit moved to the nonce
        # keeps the same signature, and moves the timestamp years away.
        nonce = valid.query["timestamp"][-1] + valid.query["nonce"]
        return with_query(valid, timestamp=valid.query["timestamp"][:-1], nonce=nonce)
    if change == "downgrade_to_plain":
        plain = {k: v for k, v in valid.query.items() if k not in ("encrypt_type", "msg_signature")}
        return Callback(plain, PLAIN_QUESTION.replace("o-hostile-replay", "o-victim").encode())
    if change == "ten_megabytes":
        return Callback(valid.query, b"<xml><Encrypt><![CDATA[" + b"A" * (10 * 1024 * 1024) + b"]]></Encrypt></xml>")
    raise ValueError(f"unknown change {change!r}")


def resigned(callback: Callback, token: str, encrypted: str, *, timestamp: str) -> Callback:
    """Signed properly for its new timestamp: only the freshness window can refuse it."""
    nonce = callback.query["nonce"]
    return with_query(callback, timestamp=timestamp, signature=sha1_signature(token, timestamp, nonce),
                      msg_signature=sha1_signature(token, timestamp, nonce, encrypted))


def hostile_callback(case: dict, platform: PlatformSimulator, token: str, key: bytes) -> Callback:
    layer = case["layer"]
    if layer == "envelope":  # the raw body under a query signed for another one
        return Callback(platform.callback(PLAIN_QUESTION).query, (HOSTILE / case["file"]).read_bytes())
    if layer == "plaintext":
        return platform.sealed_callback((HOSTILE / case["file"]).read_bytes())
    if layer == "encrypt":
        return platform.envelope_callback(case["value"])
    if layer == "callback" and case["change"] != "replay":
        return changed_callback(case["change"], platform, token, key)
    return platform.callback(PLAIN_QUESTION)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_hostile_callback_gets_its_answer_and_nothing_more(home, case):
    generate = GenerateServer(engine_cls=EchoEngine, engine_kwargs={"answer": "青禾家居支持7天无理由退货。"},
                              settings_overrides={"home": str(home)})
    client = make_client(home, generate=generate)
    account = Settings(home=home).account_map()["default"]
    platform = PlatformSimulator(account, SystemClock())
    callback = hostile_callback(case, platform, account.token.get_secret_value(), account.aes_key_bytes())
    deliveries = 3 if case.get("change") == "replay" else 1  # WeChat's retries, or a replayer's

    responses = []
    for _ in range(deliveries):
        started = time.monotonic()
        responses.append(client.post("/wechat/default", params=callback.query, content=callback.body))
        assert time.monotonic() - started < HANG_GUARD_S, case["name"]
    generated = len(generate._core._engine.calls)

    assert all(response.status_code != 500 for response in responses)
    if isinstance(case["expect"], int):
        (response,) = responses
        assert (response.status_code, response.json()["error"]) == (case["expect"], case["error"])
        assert generated == 0
    elif case["expect"] == "empty":
        (response,) = responses
        assert response.status_code == 200 and response.content in (b"", b"success")
        assert generated == 0
    else:  # one_reply: the same answer to every delivery, generated at most once
        replies = [platform.open_reply(response.content) for response in responses]
        assert all(response.status_code == 200 for response in responses) and replies[0]["Content"]
        assert all(reply["Content"] == replies[0]["Content"] for reply in replies)
        assert generated <= 1
