"""The API key format, pure: generate, check, hash, show.

A key is ``tnty_`` + 32 random base62 characters + a 6-character base62
CRC32 of those 32 (the GitHub token scheme): a mistyped or truncated key is
refused by its checksum before any lookup, and the prefix makes a leaked key
easy to find in logs and code. Only the SHA-256 of a key is stored: keys carry
190 bits of randomness, so a fast hash is enough (no password hashing).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib
from typing import Final

PREFIX: Final = "tnty_"
ALPHABET: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
BODY_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
KEY_LENGTH: Final = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
DISPLAY_LENGTH: Final = len(PREFIX) + 8
_ALLOWED: Final = frozenset(ALPHABET)


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    """The checksum characters of a key body."""
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate() -> str:
    """A new key; shown once, then only its hash is kept."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return PREFIX + body + checksum(body)


def is_well_formed(key: str) -> bool:
    """True if `key` has the prefix, the length, the alphabet and a matching checksum."""
    if len(key) != KEY_LENGTH or not key.startswith(PREFIX):
        return False
    rest = key[len(PREFIX) :]
    if not _ALLOWED.issuperset(rest):
        return False
    body, check = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return secrets.compare_digest(checksum(body), check)


def hash_key(key: str) -> str:
    """SHA-256 of the key, hex: what the database holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The public start of a key, for status, lists and logs (e.g. `tnty_Ab12Cd34`)."""
    return key[:DISPLAY_LENGTH]
