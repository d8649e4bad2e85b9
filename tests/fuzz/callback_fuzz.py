"""Coverage-guided fuzzing of the callback path (atheris, libFuzzer's engine for Python).

The target is what the decrypt function does with a raw HTTP request: the query string and
the body go to ``CallbackVerifier.open_callback`` (POST) or ``verify_url`` (GET), exactly as
the ingress passes them. It must return a message or raise a typed ``RejectedRequest`` with a
4xx status; anything else is a crash, and so is one input taking longer than ``-timeout``.

One input is ``selector byte + raw query + "\\n\\n" + body``. The selector picks the account
(the wxassist MP vectors, or wechatpy's WeCom vectors) and how far the harness helps the
fuzzer past the signature, so every layer gets explored, not just the first check:

    0 raw       the query and body as they are (signature checks, size, timestamps)
    1 envelope  the body is an Encrypt value: wrapped, and msg_signature computed (base64,
                block size, padding, length, appid)
    2 sealed    the body is plaintext XML: encrypted with the account's key and signed
                (XML parsing, message typing, field checks)
    3 url       a URL verification (GET): the query alone
    4 plain     the body is plain-mode XML, signed, for an account that allows plain mode

Seeds are the published test vectors in every mode, plus the hostile corpus
(tests/fixtures/hostile/). Run ``make fuzz FUZZ_SECONDS=N``; ``make test`` runs 60 s of it
(tests/unit/test_fuzz_smoke.py).

    python tests/fuzz/callback_fuzz.py CORPUS_DIR [libFuzzer flags…]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from functions.common.clock import FixedClock, FixedRandom
    from functions.common.errors import RejectedRequest
    from functions.common.safe_xml import cdata
    from functions.common.settings import AccountConfig
    from functions.common.wechat_crypto import MessageCipher, sha1_signature
    from functions.decrypt.core import CallbackVerifier

FIXTURES = REPO / "tests" / "fixtures"
HOSTILE = FIXTURES / "hostile"
MAX_BODY_BYTES = 64 * 1024  # the service's default cap
MODES = ("raw", "envelope", "sealed", "url", "plain")


def _accounts() -> list[tuple[AccountConfig, int]]:
    """(account, the clock its vectors were signed at); the account is named "default"."""
    mp = json.loads((FIXTURES / "wxassist_vectors.json").read_text())["mp"]
    wecom = json.loads((FIXTURES / "wechat_vectors.json").read_text())["wecom"]
    return [
        (AccountConfig(name="default", kind="mp", token=mp["token"], aes_key=mp["encoding_aes_key"],
                       appid=mp["appid"], plain_callbacks=True), int(mp["callback"]["timestamp"])),
        (AccountConfig(name="default", kind="wecom", token=wecom["token"], aes_key=wecom["encoding_aes_key"],
                       appid=wecom["receive_id"], plain_callbacks=True), int(wecom["decrypt"]["timestamp"])),
    ]


ACCOUNTS = _accounts()
VERIFIERS = [CallbackVerifier({"default": account}, FixedClock(now_s), max_body_bytes=MAX_BODY_BYTES,
                              timestamp_window_s=300) for account, now_s in ACCOUNTS]


def encode(mode: str, account_index: int, query: dict[str, str], body: bytes) -> bytes:
    selector = MODES.index(mode) + len(MODES) * account_index
    return bytes([selector]) + urlencode(query).encode() + b"\n\n" + body


def decode(data: bytes) -> tuple[str, int, dict[str, str], bytes]:
    selector = data[0] if data else 0
    raw_query, _, body = data[1:].partition(b"\n\n")
    # As Starlette reads a query string: percent-decoded, latin-1 for bytes it cannot name.
    query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
    return MODES[selector % len(MODES)], (selector // len(MODES)) % len(ACCOUNTS), query, body


def seal(account: AccountConfig, plaintext: bytes) -> str:
    """WeChat's AES payload around any bytes (not just UTF-8 text)."""
    return MessageCipher(account.aes_key_bytes(), account.appid, FixedRandom(b"fuzz-prefix-16b!")).encrypt_bytes(plaintext)


def request_for(mode: str, account: AccountConfig, query: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """The request the harness builds from the input's parts (see the module docstring)."""
    token = account.token.get_secret_value()
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if mode in ("envelope", "sealed"):
        encrypted = body.decode("latin-1") if mode == "envelope" else seal(account, body)
        signed = dict(query, encrypt_type="aes", msg_signature=sha1_signature(token, timestamp, nonce, encrypted))
        envelope = f"<xml><ToUserName>{cdata(account.appid)}</ToUserName><Encrypt>{cdata(encrypted)}</Encrypt></xml>"
        return signed, envelope.encode()
    if mode == "plain":
        plain = {k: v for k, v in query.items() if k not in ("encrypt_type", "msg_signature")}
        return dict(plain, signature=sha1_signature(token, timestamp, nonce)), body
    return query, body


def test_one_input(data: bytes) -> None:
    mode, account_index, query, body = decode(data)
    account, verifier = ACCOUNTS[account_index][0], VERIFIERS[account_index]
    query, body = request_for(mode, account, query, body)
    try:
        if mode == "url":
            verifier.verify_url("default", query)
        else:
            verifier.open_callback("default", query, body)
    except RejectedRequest as rejection:
        if not 400 <= rejection.http_status < 500:
            raise AssertionError(f"{type(rejection).__name__} answers {rejection.http_status}") from rejection


def seeds() -> list[bytes]:
    """The published vectors in every mode, and each hostile corpus body as a raw callback."""
    mp = json.loads((FIXTURES / "wxassist_vectors.json").read_text())["mp"]
    wecom = json.loads((FIXTURES / "wechat_vectors.json").read_text())["wecom"]
    mp_call, wecom_call = mp["callback"], wecom["decrypt"]
    mp_query = {k: mp_call[k] for k in ("signature", "timestamp", "nonce", "msg_signature")} | {"encrypt_type": "aes"}
    wecom_query = {k: wecom_call[k] for k in ("msg_signature", "timestamp", "nonce")}
    found = [
        encode("raw", 0, mp_query, mp_call["body"].encode()),
        encode("raw", 1, wecom_query, wecom_call["envelope"].encode()),
        encode("envelope", 0, mp_query, mp_call["encrypt"].encode()),
        encode("sealed", 0, mp_query, mp_call["plain_xml"].encode()),
        encode("sealed", 1, wecom_query, mp_call["plain_xml"].encode()),
        encode("url", 0, {k: mp["url_verification"][k] for k in ("signature", "timestamp", "nonce", "echostr")}, b""),
        encode("url", 1, {k: wecom["url_verification"][k] for k in ("msg_signature", "timestamp", "nonce", "echostr")}, b""),
        encode("plain", 0, mp_query, mp_call["plain_xml"].encode()),
    ]
    for case in sorted(HOSTILE.glob("*.xml")):
        found.append(encode("sealed", 0, mp_query, case.read_bytes()[:MAX_BODY_BYTES]))
    return found


def write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(seeds()):
        (corpus / f"seed-{index:03d}").write_bytes(seed)


def main() -> None:
    corpora = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in corpora[:1]:  # the first is where libFuzzer keeps what it finds: seed it
        if not corpus.is_dir() or not any(corpus.iterdir()):
            write_seeds(corpus)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
