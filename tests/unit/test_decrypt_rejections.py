"""Every way a callback can be refused gives a typed rejection with a 4xx status."""

from __future__ import annotations

import base64
import re
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from functions.common.clock import FixedClock
from functions.common.errors import (
    AppIdMismatch,
    BodyTooLarge,
    DecryptionFailed,
    ForbiddenXml,
    MalformedRequest,
    RejectedRequest,
    SignatureMismatch,
    StaleTimestamp,
    UnknownAccount,
)
from functions.emulator.platform import PlatformSimulator, text_message_xml
from functions.common.wechat_crypto import pkcs7_pad, sha1_signature
from functions.decrypt.core import CallbackVerifier

NOW_S = 1_763_700_000
MAX_BODY_BYTES = 4096


@pytest.fixture
def verifier(mp_account) -> CallbackVerifier:
    """An account that also takes WeChat's plain mode, so both modes' refusals are reachable."""
    both_modes = mp_account.model_copy(update={"plain_callbacks": True})
    return CallbackVerifier({"default": both_modes}, FixedClock(NOW_S), max_body_bytes=MAX_BODY_BYTES, timestamp_window_s=300)


@pytest.fixture
def platform(mp_account) -> PlatformSimulator:
    return PlatformSimulator(mp_account, FixedClock(NOW_S))


def message_xml(content: str = "你好") -> str:
    return text_message_xml(to_user="gh_x", from_user="o-user", content=content, msg_id="1", create_time=NOW_S)


def signed_raw_payload(account, plaintext: bytes) -> tuple[dict[str, str], bytes]:
    """Encrypt arbitrary plaintext (bypassing our encoder) and sign it properly, so only the
    payload checks can catch it."""
    key = account.aes_key_bytes()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    encrypted = base64.b64encode(encryptor.update(plaintext) + encryptor.finalize()).decode()
    return signed_envelope(account, encrypted)


def signed_envelope(account, encrypted: str) -> tuple[dict[str, str], bytes]:
    timestamp, nonce = str(NOW_S), "12345"
    signature = sha1_signature(account.token.get_secret_value(), timestamp, nonce, encrypted)
    query = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "encrypt_type": "aes"}
    return query, f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()


def test_a_good_callback_opens(verifier, platform):
    callback = platform.callback(message_xml())
    assert verifier.open_callback("default", callback.query, callback.body).content == "你好"


def test_unknown_account_is_404(verifier, platform):
    callback = platform.callback(message_xml())
    with pytest.raises(UnknownAccount) as caught:
        verifier.open_callback("nobody", callback.query, callback.body)
    assert caught.value.http_status == 404


def test_oversize_body_refused_before_parsing(verifier, platform):
    body = b"<xml>" + b"a" * MAX_BODY_BYTES + b"</xml>"
    with pytest.raises(BodyTooLarge) as caught:
        verifier.open_callback("default", platform.callback(message_xml()).query, body)
    assert caught.value.http_status == 413


@pytest.mark.parametrize(
    "body",
    [
        b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Encrypt>&x;</Encrypt></xml>',
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml>&lol2;</xml>',
        b'<!-- <xml> --><!DOCTYPE xml SYSTEM "http://169.254.169.254/latest/meta-data/"><xml><Encrypt>x</Encrypt></xml>',
    ],
    ids=["xxe", "billion-laughs", "external-dtd-after-a-comment"],
)
def test_doctype_and_entities_refused(verifier, platform, body):
    with pytest.raises(ForbiddenXml):
        verifier.open_callback("default", platform.callback(message_xml()).query, body)


@pytest.mark.parametrize(
    "body",
    [
        b'<!doctype lolz [<!ENTITY lol "lol">]><xml>&lol;</xml>',  # XML declarations are upper case
        b"<xml><!ENTITY a 'b'><Encrypt>x</Encrypt></xml>",  # only a DOCTYPE may declare one
    ],
    ids=["lower-case-doctype", "entity-outside-a-doctype"],
)
def test_declarations_out_of_place_are_malformed(verifier, platform, body):
    with pytest.raises(MalformedRequest):
        verifier.open_callback("default", platform.callback(message_xml()).query, body)


def test_a_question_quoting_a_doctype_is_content_not_an_attack(verifier, platform):
    question = "<!DOCTYPE html> 和 <!ENTITY> 是什么？"
    callback = platform.callback(message_xml(question))
    assert verifier.open_callback("default", callback.query, callback.body).content == question


@pytest.mark.parametrize(
    "body",
    [b"<xml><ToUserName>a</ToUserName></xml>", b"<xml><Encrypt></Encrypt></xml>", b"<xml><Encrypt>", b"not xml", b"<other/>"],
    ids=["no-encrypt", "empty-encrypt", "truncated", "not-xml", "wrong-root"],
)
def test_malformed_envelopes_refused(verifier, platform, body):
    with pytest.raises(MalformedRequest) as caught:
        verifier.open_callback("default", platform.callback(message_xml()).query, body)
    assert caught.value.http_status == 400


def test_non_utf8_body_refused(verifier, mp_account):
    query, _ = signed_envelope(mp_account, "abc")
    with pytest.raises(MalformedRequest):
        verifier.open_callback("default", query, "<xml><Encrypt>退货</Encrypt></xml>".encode("gbk"))


def test_bad_signature_refused(verifier, platform):
    callback = platform.callback(message_xml())
    query = callback.query | {"msg_signature": "f" * 40}
    with pytest.raises(SignatureMismatch) as caught:
        verifier.open_callback("default", query, callback.body)
    assert caught.value.http_status == 403


@pytest.mark.parametrize("skew_s", [-301, 301, -86400, 10**6])
def test_timestamps_outside_the_window_refused(mp_account, skew_s):
    sender = PlatformSimulator(mp_account, FixedClock(NOW_S + skew_s))
    callback = sender.callback(message_xml())  # correctly signed, but stale or from the future
    verifier = CallbackVerifier({"default": mp_account}, FixedClock(NOW_S), max_body_bytes=MAX_BODY_BYTES, timestamp_window_s=300)
    with pytest.raises(StaleTimestamp):
        verifier.open_callback("default", callback.query, callback.body)


def test_timestamp_digit_moved_into_nonce_is_refused(mp_account):
    """The signed string has no delimiters: moving the timestamp's last digit to the front
    of the nonce keeps the signature valid. The freshness window must catch it."""
    now_s = 1_763_700_009
    token = mp_account.token.get_secret_value()
    original = {"timestamp": str(now_s), "nonce": "5555"}
    resplit = {"timestamp": str(now_s)[:-1], "nonce": str(now_s)[-1] + "5555"}
    signature = sha1_signature(token, original["timestamp"], original["nonce"])
    assert sha1_signature(token, resplit["timestamp"], resplit["nonce"]) == signature  # the attack's premise
    both_modes = mp_account.model_copy(update={"plain_callbacks": True})
    verifier = CallbackVerifier({"default": both_modes}, FixedClock(now_s), max_body_bytes=MAX_BODY_BYTES, timestamp_window_s=300)
    body = message_xml().encode()
    assert verifier.open_callback("default", original | {"signature": signature}, body).content == "你好"
    with pytest.raises(StaleTimestamp):
        verifier.open_callback("default", resplit | {"signature": signature}, body)


def test_missing_or_malformed_query_refused(verifier, platform):
    callback = platform.callback(message_xml())
    for missing in ("timestamp", "nonce", "msg_signature"):
        query = {k: v for k, v in callback.query.items() if k != missing}
        with pytest.raises(RejectedRequest):
            verifier.open_callback("default", query, callback.body)
    with pytest.raises(MalformedRequest):
        verifier.open_callback("default", callback.query | {"timestamp": "12ab"}, callback.body)


def test_bad_base64_refused(verifier, mp_account):
    query, body = signed_envelope(mp_account, "not*base64*at*all")
    with pytest.raises(DecryptionFailed, match="base64"):
        verifier.open_callback("default", query, body)


def test_truncated_ciphertext_refused(verifier, mp_account, platform):
    good = platform.callback(message_xml()).body.decode()
    encrypted = good.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    truncated = base64.b64encode(base64.b64decode(encrypted)[:-5]).decode()
    query, body = signed_envelope(mp_account, truncated)
    with pytest.raises(DecryptionFailed, match="blocks"):
        verifier.open_callback("default", query, body)


def test_bad_padding_refused(verifier, mp_account):
    plaintext = b"0" * 16 + struct.pack(">I", 4) + b"<xml" + mp_account.appid.encode()
    unpadded = plaintext + b"\x00" * (32 - len(plaintext) % 32)  # zero padding, not PKCS#7
    query, body = signed_raw_payload(mp_account, unpadded)
    with pytest.raises(DecryptionFailed, match="padding"):
        verifier.open_callback("default", query, body)


def test_inconsistent_padding_bytes_refused(verifier, mp_account):
    plaintext = b"0" * 16 + struct.pack(">I", 4) + b"<xml" + mp_account.appid.encode()
    padded = bytearray(pkcs7_pad(plaintext))
    padded[-2] ^= 0x01  # the last byte still claims a valid pad length; the one before disagrees
    query, body = signed_raw_payload(mp_account, bytes(padded))
    with pytest.raises(DecryptionFailed, match="padding"):
        verifier.open_callback("default", query, body)


def test_declared_length_beyond_plaintext_refused(verifier, mp_account):
    plaintext = b"0" * 16 + struct.pack(">I", 10_000) + b"<xml/>" + mp_account.appid.encode()
    query, body = signed_raw_payload(mp_account, pkcs7_pad(plaintext))
    with pytest.raises(DecryptionFailed, match="length"):
        verifier.open_callback("default", query, body)


def test_non_utf8_plaintext_refused(verifier, mp_account):
    xml = "<xml>退货</xml>".encode("gbk")
    plaintext = b"0" * 16 + struct.pack(">I", len(xml)) + xml + mp_account.appid.encode()
    query, body = signed_raw_payload(mp_account, pkcs7_pad(plaintext))
    with pytest.raises(DecryptionFailed, match="UTF-8"):
        verifier.open_callback("default", query, body)


def test_wrong_appid_refused(verifier, mp_account):
    xml = message_xml().encode()
    plaintext = b"0" * 16 + struct.pack(">I", len(xml)) + xml + b"wx-someone-else"
    query, body = signed_raw_payload(mp_account, pkcs7_pad(plaintext))
    with pytest.raises(AppIdMismatch) as caught:
        verifier.open_callback("default", query, body)
    assert caught.value.http_status == 403


def test_decrypted_doctype_refused(verifier, mp_account, platform):
    callback = platform.callback('<!DOCTYPE x [<!ENTITY a "b">]><xml><Content>&a;</Content></xml>')
    with pytest.raises(ForbiddenXml):
        verifier.open_callback("default", callback.query, callback.body)


def test_decrypted_message_missing_fields_refused(verifier, platform):
    callback = platform.callback("<xml><Content><![CDATA[hi]]></Content></xml>")
    with pytest.raises(MalformedRequest, match="FromUserName"):
        verifier.open_callback("default", callback.query, callback.body)


def test_plain_mode_body_is_not_parsed_before_the_signature(verifier, platform):
    callback = platform.callback("<xml>not even closed", safe_mode=False)
    with pytest.raises(SignatureMismatch):  # not MalformedRequest: the parser never ran
        verifier.open_callback("default", callback.query | {"signature": "0" * 40}, callback.body)


def test_a_safe_mode_account_refuses_a_plain_mode_downgrade(mp_account, platform):
    """Every safe-mode URL carries a plain ``signature`` too: dropping ``encrypt_type`` and
    ``msg_signature`` must not let anyone post an unsigned plaintext body under it."""
    verifier = CallbackVerifier({"default": mp_account}, FixedClock(NOW_S), max_body_bytes=MAX_BODY_BYTES,
                                timestamp_window_s=300)
    signed = platform.callback(message_xml("在吗"))
    downgraded = {key: value for key, value in signed.query.items() if key not in ("encrypt_type", "msg_signature")}
    forged = text_message_xml(to_user="gh_x", from_user="o-victim", content="forged", msg_id="9", create_time=NOW_S)
    with pytest.raises(SignatureMismatch, match="encrypted callbacks only"):
        verifier.open_callback("default", downgraded, forged.encode())


def test_a_leading_zero_timestamp_is_refused_so_no_digit_moves_between_it_and_the_nonce(verifier, platform):
    callback = platform.callback(message_xml())
    with pytest.raises(MalformedRequest, match="timestamp"):
        verifier.open_callback("default", callback.query | {"timestamp": "0" + callback.query["timestamp"]}, callback.body)


@pytest.mark.parametrize(("field", "value"), [
    ("FromUserName", "o-user\nwxassist answer route=forged"), ("MsgId", "1" * 200), ("CreateTime", "9" * 1000)])
def test_fields_that_become_keys_or_log_lines_must_be_short_and_printable(verifier, platform, field, value):
    xml = re.sub(f"<{field}>.*?</{field}>", f"<{field}><![CDATA[{value}]]></{field}>", message_xml())
    callback = platform.callback(xml)
    with pytest.raises(MalformedRequest, match=field):
        verifier.open_callback("default", callback.query, callback.body)


def test_plain_mode_callback_opens(verifier, platform):
    callback = platform.callback(message_xml("在吗"), safe_mode=False)
    message = verifier.open_callback("default", callback.query, callback.body)
    assert message.content == "在吗" and not message.encrypted


def test_events_are_typed_by_wechatpy(verifier, platform):
    xml = (
        "<xml><ToUserName>gh_x</ToUserName><FromUserName>o-user</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>event</MsgType><Event>subscribe</Event><EventKey>qrscene_123</EventKey></xml>"
    )
    callback = platform.callback(xml)
    message = verifier.open_callback("default", callback.query, callback.body)
    assert message.event == "subscribe_scan" and message.msg_id is None
    assert message.dedupe_key == ("default", "o-user", "1:subscribe_scan")
