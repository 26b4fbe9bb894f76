"""Reading what itsdangerous signed: a JSON object, or why not ("invalid", "expired")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

__all__ = ["load_signed"]


def load_signed(
    signer: URLSafeTimedSerializer, value: str, *, max_chars: int, max_age_s: int
) -> tuple[dict[str, Any], datetime] | str:
    """The object `value` holds and when it was signed, or "invalid" / "expired".

    The signature is compared in constant time (itsdangerous uses
    `hmac.compare_digest`); an overlong value is refused before any parsing.
    """
    if len(value) > max_chars:
        return "invalid"
    try:
        data, signed_at = signer.loads(value, max_age=max_age_s, return_timestamp=True)
    except SignatureExpired:
        return "expired"
    except BadSignature:
        return "invalid"
    if not isinstance(data, dict):
        return "invalid"
    return data, signed_at
