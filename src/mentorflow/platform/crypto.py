"""Secrets: random keys and tokens, their stored hashes, and encryption at rest.

Keys and tokens (``pk_…``, ``sk_…``, ``st_…``) are random and stored only as SHA-256 digests.
Small secrets kept readable, such as an org's own integration API keys, are Fernet tokens
(AES-128-CBC + HMAC-SHA256). The key is ``ENCRYPTION_KEY`` (a Fernet key,
``MENTORFLOW_ENCRYPTION_KEY``) when the operator sets one, else derived from ``SECRET_KEY``
with HKDF-SHA256, so the embedded default needs no extra setting.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Binds the derived key to this one use, so it never equals a key derived from SECRET_KEY
#: for anything else.
_HKDF_INFO = b"mentorflow integration credentials v1"


def generate_secret(prefix: str) -> str:
    """Return a new random secret such as ``pk_…``."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """Return the SHA-256 hex digest stored in place of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    """Return the non-secret head of a key that identifies it to people."""
    return secret[:11]


def encrypt_secret(plain: str, config: Mapping[str, Any]) -> str:
    """Encrypt ``plain`` with the app's encryption key; return a printable token."""
    return _fernet(config).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str, config: Mapping[str, Any]) -> str:
    """Decrypt a token made by :func:`encrypt_secret`; raise ValueError if the key doesn't fit."""
    try:
        return _fernet(config).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise ValueError(
            "Cannot decrypt the stored secret: it was encrypted with another key or is damaged "
            "(was SECRET_KEY or ENCRYPTION_KEY changed?). Enter the credential again."
        ) from exc


def _fernet(config: Mapping[str, Any]) -> MultiFernet:
    keys: list[Fernet] = []
    configured = config.get("ENCRYPTION_KEY")
    if configured:
        try:
            keys.append(Fernet(configured))
        except (ValueError, TypeError) as exc:
            raise ValueError(
                "ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes); generate "
                "one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`."
            ) from exc
    secret_key = config.get("SECRET_KEY")
    if secret_key:
        # Still tried for decryption after ENCRYPTION_KEY is introduced, so secrets stored
        # before that keep working; new ones are encrypted with the first key.
        keys.append(Fernet(_derive_key(secret_key)))
    if not keys:
        raise ValueError("Neither ENCRYPTION_KEY nor SECRET_KEY is set; cannot encrypt secrets.")
    return MultiFernet(keys)


def _derive_key(secret_key: str | bytes) -> bytes:
    material = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        material
    )
    return base64.urlsafe_b64encode(derived)
