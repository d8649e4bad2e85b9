"""WeChat's callback cryptography, written against the published protocol with every check
wechatpy 1.8.18 leaves out (see FIELD-NOTES): constant-time signature comparison, strict
base64, block-size, PKCS#7 padding and declared-length validation, UTF-8 validation, and a
``secrets``-backed random prefix.

Protocol: ``signature = sha1(sorted(token, timestamp, nonce[, encrypt]))``;
AES-256-CBC with key = b64decode(EncodingAESKey + "="), IV = key[:16], PKCS#7 to 32 bytes;
plaintext = 16 random bytes + 4-byte big-endian length + message + receive id (appid / corp id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from functions.common.clock import RandomSource, SecureRandom
from functions.common.errors import AppIdMismatch, DecryptionFailed

PKCS7_BLOCK_BYTES = 32  # WeChat pads to 32, not AES's 16
AES_BLOCK_BYTES = 16
RANDOM_PREFIX_BYTES = 16
LENGTH_FIELD_BYTES = 4


def sha1_signature(*parts: str) -> str:
    """WeChat's signature: the parts sorted as strings, concatenated, SHA-1 in hex."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signature_matches(expected_hex: str, given: str) -> bool:
    """Constant-time comparison; ``given`` is attacker-controlled and may be any text."""
    return hmac.compare_digest(expected_hex.encode("utf-8"), given.encode("utf-8", "surrogatepass"))


def pkcs7_pad(data: bytes, block_bytes: int = PKCS7_BLOCK_BYTES) -> bytes:
    pad = block_bytes - len(data) % block_bytes
    return data + bytes([pad]) * pad


def pkcs7_unpad(data: bytes, block_bytes: int = PKCS7_BLOCK_BYTES) -> bytes:
    if not data:
        raise DecryptionFailed("empty plaintext")
    pad = data[-1]
    if not 1 <= pad <= block_bytes or pad > len(data) or data[-pad:] != bytes([pad]) * pad:
        raise DecryptionFailed("invalid PKCS#7 padding")
    return data[:-pad]


class MessageCipher:
    """Encrypts and decrypts WeChat message payloads for one account."""

    def __init__(self, key: bytes, receive_id: str, random: RandomSource | None = None):
        if len(key) != 32:
            raise ValueError("the AES key must be 32 bytes")
        self._key = key
        self._receive_id = receive_id
        self._random = random or SecureRandom()

    def __repr__(self) -> str:  # the key must never reach a log line
        return f"MessageCipher(receive_id={self._receive_id!r})"

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:AES_BLOCK_BYTES]))

    def encrypt(self, message: str) -> str:
        return self.encrypt_bytes(message.encode("utf-8"))

    def encrypt_bytes(self, body: bytes) -> str:
        """Any bytes as the message: the platform simulator seals hostile payloads with it."""
        plaintext = b"".join(
            (
                self._random.token_bytes(RANDOM_PREFIX_BYTES),
                struct.pack(">I", len(body)),
                body,
                self._receive_id.encode("utf-8"),
            )
        )
        encryptor = self._cipher().encryptor()
        ciphertext = encryptor.update(pkcs7_pad(plaintext)) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypted_b64: str) -> str:
        try:
            ciphertext = base64.b64decode(encrypted_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecryptionFailed("ciphertext is not valid base64") from exc
        if len(ciphertext) < PKCS7_BLOCK_BYTES or len(ciphertext) % AES_BLOCK_BYTES:
            raise DecryptionFailed("ciphertext is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plaintext = pkcs7_unpad(decryptor.update(ciphertext) + decryptor.finalize())
        content = plaintext[RANDOM_PREFIX_BYTES:]
        if len(content) < LENGTH_FIELD_BYTES:
            raise DecryptionFailed("plaintext shorter than its length field")
        (message_bytes,) = struct.unpack(">I", content[:LENGTH_FIELD_BYTES])
        if message_bytes > len(content) - LENGTH_FIELD_BYTES:
            raise DecryptionFailed("declared message length exceeds the plaintext")
        end = LENGTH_FIELD_BYTES + message_bytes
        try:
            message = content[LENGTH_FIELD_BYTES:end].decode("utf-8")
            receive_id = content[end:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecryptionFailed("decrypted message is not UTF-8") from exc
        if receive_id != self._receive_id:
            raise AppIdMismatch("message addressed to a different appid / corp id")
        return message
