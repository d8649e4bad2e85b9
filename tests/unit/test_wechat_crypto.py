"""Every crypto path against published WeCom vectors (wechatpy) and our pinned Official
Account vectors, each paired with a must-fail twin."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from wechatpy.crypto import WeChatCrypto

from functions.common.clock import FixedClock, FixedRandom
from functions.common.errors import SignatureMismatch, StaleTimestamp
from functions.emulator.platform import PlatformSimulator
from functions.common.records import InboundMessage
from functions.common.wechat_crypto import MessageCipher, sha1_signature, signature_matches
from functions.decrypt.core import CallbackVerifier
from functions.encrypt.core import ReplySealer, seal_envelope


def verifier(account, now_s) -> CallbackVerifier:
    return CallbackVerifier({account.name: account}, FixedClock(now_s), max_body_bytes=65536, timestamp_window_s=300)


# ---- WeCom: wechatpy's published vectors -------------------------------------------------


def test_wecom_url_verification_decrypts_echostr(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["url_verification"]
    query = {k: vector[k] for k in ("msg_signature", "timestamp", "nonce", "echostr")}
    echo = verifier(wecom_account, int(vector["timestamp"])).verify_url("corp", query)
    assert echo == "5927782489442352469"  # what wechatpy's WeCom crypto decrypts it to


def test_wecom_url_verification_must_fail_with_other_nonce(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["url_verification"]
    query = {k: vector[k] for k in ("msg_signature", "timestamp", "echostr")} | {"nonce": vector["must_fail_with_nonce"]}
    with pytest.raises(SignatureMismatch):
        verifier(wecom_account, int(vector["timestamp"])).verify_url("corp", query)


def test_wecom_encrypt_is_byte_exact(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["encrypt"]
    cipher = MessageCipher(wecom_account.aes_key_bytes(), wecom_account.appid, FixedRandom(vector["random_prefix"].encode()))
    encrypted = cipher.encrypt(vector["plain_xml"])
    signature = sha1_signature(wecom_account.token.get_secret_value(), vector["timestamp"], vector["nonce"], encrypted)
    assert seal_envelope(encrypted, signature, vector["timestamp"], vector["nonce"]) == vector["expected_envelope"]


def test_wecom_encrypt_must_fail_with_other_prefix(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["encrypt"]
    cipher = MessageCipher(wecom_account.aes_key_bytes(), wecom_account.appid, FixedRandom(b"6543210987654321"))
    encrypted = cipher.encrypt(vector["plain_xml"])
    signature = sha1_signature(wecom_account.token.get_secret_value(), vector["timestamp"], vector["nonce"], encrypted)
    assert seal_envelope(encrypted, signature, vector["timestamp"], vector["nonce"]) != vector["expected_envelope"]


def test_wecom_callback_decrypts(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["decrypt"]
    query = {k: vector[k] for k in ("msg_signature", "timestamp", "nonce")}
    message = verifier(wecom_account, int(vector["timestamp"])).open_callback("corp", query, vector["envelope"].encode())
    assert message.content == vector["expected"]["Content"]
    assert message.from_user == vector["expected"]["FromUserName"]
    assert message.agent_id == "1" and message.encrypted


def test_wecom_callback_must_fail_with_tampered_signature(wecom_vectors, wecom_account):
    vector = wecom_vectors["wecom"]["decrypt"]
    query = {"msg_signature": "0" * 40, "timestamp": vector["timestamp"], "nonce": vector["nonce"]}
    with pytest.raises(SignatureMismatch):
        verifier(wecom_account, int(vector["timestamp"])).open_callback("corp", query, vector["envelope"].encode())


def test_plain_url_verification_vector(wecom_vectors, mp_account):
    vector = wecom_vectors["plain_signature"]
    account = mp_account.model_copy(update={"token": SecretStr(vector["token"])})
    query = {"signature": vector["signature"], "timestamp": vector["timestamp"], "nonce": vector["nonce"], "echostr": "hello"}
    assert verifier(account, int(vector["timestamp"])).verify_url("default", query) == "hello"
    query["signature"] = vector["must_fail_signature"]
    with pytest.raises(SignatureMismatch):
        verifier(account, int(vector["timestamp"])).verify_url("default", query)


# ---- Official Account safe mode: our pinned vectors ---------------------------------------


def test_mp_callback_encrypt_is_byte_exact(mp_vectors, mp_account):
    vector = mp_vectors["callback"]
    cipher = MessageCipher(mp_account.aes_key_bytes(), mp_account.appid, FixedRandom(mp_vectors["random_prefix"].encode()))
    assert cipher.encrypt(vector["plain_xml"]) == vector["encrypt"]
    assert sha1_signature(mp_vectors["token"], vector["timestamp"], vector["nonce"], vector["encrypt"]) == vector["msg_signature"]


def test_mp_callback_opens(mp_vectors, mp_account):
    vector = mp_vectors["callback"]
    query = {k: vector[k] for k in ("signature", "timestamp", "nonce", "msg_signature")} | {"encrypt_type": "aes"}
    message = verifier(mp_account, int(vector["timestamp"])).open_callback("default", query, vector["body"].encode())
    assert message == InboundMessage(
        account="default",
        to_user="gh_0123456789ab",
        from_user="oUser-pinned-openid",
        create_time=1763700000,
        msg_type="text",
        msg_id="24001234567890123",
        content="你们的退货政策是什么？",
        encrypted=True,
    )


def test_mp_callback_must_fail_with_twin_signature(mp_vectors, mp_account):
    vector = mp_vectors["callback"]
    query = {"msg_signature": vector["must_fail_msg_signature"], "timestamp": vector["timestamp"],
             "nonce": vector["nonce"], "encrypt_type": "aes"}
    with pytest.raises(SignatureMismatch):
        verifier(mp_account, int(vector["timestamp"])).open_callback("default", query, vector["body"].encode())


def test_mp_reply_is_byte_exact_and_escapes_cdata(mp_vectors, mp_account):
    vector = mp_vectors["reply"]
    inbound = InboundMessage("default", "gh_0123456789ab", "oUser-pinned-openid", 1763700000, "text", content="x")
    # The nonce comes from the random source: 4 bytes that encode 42, then the 16-byte prefix.
    random = _Sequence([(42).to_bytes(4, "big"), mp_vectors["random_prefix"].encode()])
    sealer = ReplySealer({"default": mp_account}, FixedClock(int(vector["timestamp"])), random)
    reply = sealer.text_reply(inbound, "退货 ]]> 测试")
    assert reply.body == vector["expected_envelope"]
    assert PlatformSimulator(mp_account, FixedClock(0)).open_reply(reply.body)["Content"] == "退货 ]]> 测试"


def test_mp_reply_must_fail_with_other_token(mp_vectors, mp_account):
    vector = mp_vectors["reply"]
    impostor = mp_account.model_copy(update={"token": SecretStr("not-the-token")})
    with pytest.raises(SignatureMismatch):
        PlatformSimulator(impostor, FixedClock(0)).open_reply(vector["expected_envelope"])


def test_mp_url_verification_and_stale_twin(mp_vectors, mp_account):
    vector = mp_vectors["url_verification"]
    query = {k: vector[k] for k in ("signature", "timestamp", "nonce", "echostr")}
    assert verifier(mp_account, int(vector["timestamp"])).verify_url("default", query) == vector["echostr"]
    with pytest.raises(StaleTimestamp):
        verifier(mp_account, int(vector["timestamp"]) + 301).verify_url("default", query)


# ---- interoperability with wechatpy's independent implementation ---------------------------


def test_our_ciphertext_opens_in_wechatpy_and_back(mp_account):
    ours = MessageCipher(mp_account.aes_key_bytes(), mp_account.appid)
    theirs = WeChatCrypto(mp_account.token.get_secret_value(), mp_account.aes_key.get_secret_value(), mp_account.appid)
    xml = "<xml><Content><![CDATA[互通测试 interop]]></Content></xml>"
    encrypted = ours.encrypt(xml)
    signature = sha1_signature(mp_account.token.get_secret_value(), "1", "2", encrypted)
    assert theirs.decrypt_message(seal_envelope(encrypted, signature, "1", "2"), signature, "1", "2") == xml
    envelope = theirs.encrypt_message(xml, "2", "1")
    encrypted_by_wechatpy = envelope.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    assert ours.decrypt(encrypted_by_wechatpy) == xml


def test_signature_compare_is_exact():
    assert signature_matches("ab" * 20, "ab" * 20)
    assert not signature_matches("ab" * 20, "AB" * 20)
    assert not signature_matches("ab" * 20, "签名")  # non-ASCII input does not crash


class _Sequence:
    """A random source that hands out the given byte strings in order."""

    def __init__(self, chunks: list[bytes]):
        self._chunks = list(chunks)

    def token_bytes(self, n: int) -> bytes:
        chunk = self._chunks.pop(0)
        assert len(chunk) == n
        return chunk
