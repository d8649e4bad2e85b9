"""Properties of the encrypt / decrypt path, over inputs hypothesis chooses:

* any text from empty to 64 KiB survives encryption and decryption unchanged, and a whole
  signed callback carrying it opens to the same message;
* flipping any byte of a signed callback's ciphertext, msg_signature, timestamp or nonce
  gives a typed rejection (``RejectedRequest``), never a message and never another error;
* ciphertext altered and then signed again (by someone holding the token, not the key) is
  either refused with a typed rejection or opens; it never raises anything else.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.common.clock import FixedClock, FixedRandom, SecureRandom
from functions.common.errors import RejectedRequest
from functions.emulator.platform import PlatformSimulator, text_message_xml
from functions.common.safe_xml import cdata
from functions.common.wechat_crypto import MessageCipher, sha1_signature
from functions.decrypt.core import CallbackVerifier

NOW_S = 1_763_700_000
MAX_TEXT_BYTES = 64 * 1024
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def up_to_64_kib(text: str) -> str:
    return text.encode("utf-8")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


# Short texts of any character, and long ones (a run repeated) up to 64 KiB in UTF-8.
ANY_TEXT = st.one_of(
    st.text(max_size=200),
    st.builds(lambda run, times: up_to_64_kib(run * times), st.text(min_size=1, max_size=64), st.integers(1, 4096)),
)
# What a WeChat text message can carry through XML: no control characters but newlines, and
# XML turns \r into \n, so none of those.
XML_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
                   | st.just("\n"), max_size=400)


@PROPERTY_SETTINGS
@given(text=ANY_TEXT)
def test_any_text_up_to_64_kib_survives_encryption(mp_account, text):
    cipher = MessageCipher(mp_account.aes_key_bytes(), mp_account.appid, SecureRandom())
    assert cipher.decrypt(cipher.encrypt(text)) == text


def signed_callback(account, content: str):
    """One signed safe-mode callback; a fixed nonce and AES prefix, so every example has the
    same shape and hypothesis can replay and shrink it."""
    platform = PlatformSimulator(account, FixedClock(NOW_S), FixedRandom(bytes(range(1, 17))))
    return platform.callback(message_xml(content))


def message_xml(content: str) -> str:
    return text_message_xml(to_user="gh_x", from_user="o-user", content=content, msg_id="1", create_time=NOW_S)


def verifier_for(account) -> CallbackVerifier:
    return CallbackVerifier({"default": account}, FixedClock(NOW_S), max_body_bytes=4 * MAX_TEXT_BYTES,
                            timestamp_window_s=300)


@PROPERTY_SETTINGS
@given(text=XML_TEXT)
def test_a_signed_callback_opens_to_the_text_it_carries(mp_account, text):
    callback = signed_callback(mp_account, text)
    message = verifier_for(mp_account).open_callback("default", callback.query, callback.body)
    # XML keeps no surrounding whitespace; an empty Content is no content.
    assert message.content == (text.strip() or None) and message.from_user == "o-user"


def encrypt_field(body: bytes) -> tuple[int, int]:
    """Where the ciphertext sits in the envelope: [start, end) in bytes."""
    start = body.index(b"<Encrypt><![CDATA[") + len(b"<Encrypt><![CDATA[")
    return start, body.index(b"]]></Encrypt>")


@PROPERTY_SETTINGS
@given(data=st.data(), part=st.sampled_from(["ciphertext", "msg_signature", "timestamp", "nonce"]),
       mask=st.integers(1, 255))
def test_flipping_any_byte_of_a_signed_callback_is_a_typed_rejection(mp_account, data, part, mask):
    callback = signed_callback(mp_account, "退货政策是什么？")
    query, body = dict(callback.query), callback.body
    if part == "ciphertext":
        start, end = encrypt_field(body)
        at = data.draw(st.integers(start, end - 1), label="byte")
        body = body[:at] + bytes([body[at] ^ mask]) + body[at + 1:]
    else:
        value = query[part]
        at = data.draw(st.integers(0, len(value) - 1), label="character")
        query[part] = value[:at] + chr(ord(value[at]) ^ mask) + value[at + 1:]
    try:
        message = verifier_for(mp_account).open_callback("default", query, body)
    except RejectedRequest as rejection:
        assert 400 <= rejection.http_status < 500
    else:
        raise AssertionError(f"a flipped {part} opened: {message}")


@PROPERTY_SETTINGS
@given(data=st.data(), mask=st.integers(1, 255))
def test_altered_ciphertext_signed_again_opens_or_is_refused_never_crashes(mp_account, data, mask):
    callback = signed_callback(mp_account, "退货政策是什么？")
    start, end = encrypt_field(callback.body)
    sealed = bytearray(base64.b64decode(callback.body[start:end]))
    at = data.draw(st.integers(0, len(sealed) - 1), label="byte")
    sealed[at] ^= mask
    encrypted = base64.b64encode(bytes(sealed)).decode()
    token = mp_account.token.get_secret_value()
    query = dict(callback.query, msg_signature=sha1_signature(token, callback.query["timestamp"],
                                                             callback.query["nonce"], encrypted))
    body = f"<xml><ToUserName>{cdata(mp_account.appid)}</ToUserName><Encrypt>{cdata(encrypted)}</Encrypt></xml>"
    try:
        verifier_for(mp_account).open_callback("default", query, body.encode())
    except RejectedRequest as rejection:
        assert 400 <= rejection.http_status < 500
