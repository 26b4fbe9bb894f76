"""JWTs minted by the host application, verified with PyJWT and remembered until they expire.

The algorithms come from the configuration, never from the token's header:
a token saying `alg: none`, or HS256 "signed" with our RSA public key, is
refused by PyJWT for an algorithm not on the list. A verified token is kept
(by its SHA-256) until its `exp`, so a stream's reconnects and a page's
requests cost one dictionary lookup, not an RSA verification each.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from sse.auth.identity import JWT, Identity
from sse.config import Config
from sse.errors import ConfigError

__all__ = ["JwtVerifier"]

log = logging.getLogger("ssechat.auth")

# Tokens are short; anything longer is refused before it is parsed.
_MAX_TOKEN_CHARS = 8192
_MAX_SUB_CHARS = 256
_MAX_NAME_CHARS = 64
# Verified tokens remembered at most; past it the oldest is forgotten first.
_CACHE_SIZE = 10_000
# How long keys fetched from a JWKS URL are reused before it is asked again.
_JWKS_LIFESPAN_S = 300
_JWKS_TIMEOUT_S = 5


class JwtVerifier:
    """Checks tokens against the configured key, algorithms, audience and issuer."""

    def __init__(self, config: Config) -> None:
        """Load the key and pin the algorithms.

        Raises:
            ConfigError: the public key file cannot be read or is not a PEM public key.
        """
        self._audience = config.jwt_audience
        self._issuer = config.jwt_issuer
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        if config.jwt_secret is not None:
            self._key = config.jwt_secret
            defaults: tuple[str, ...] = ("HS256",)
        elif config.jwt_public_key is not None:
            self._key, defaults = _public_key(config.jwt_public_key)
        else:
            assert config.jwks_url is not None, "Config requires one kind of key in jwt mode"
            self._jwks = jwt.PyJWKClient(
                config.jwks_url, lifespan=_JWKS_LIFESPAN_S, timeout=_JWKS_TIMEOUT_S
            )
            defaults = ("RS256", "ES256")
        self.algorithms = list(config.jwt_algorithms or defaults)
        self._cache: dict[bytes, Identity] = {}

    def verify(self, token: str) -> Identity | str | Awaitable[Identity | str]:
        """The token's identity, or why not: "invalid" or "expired"."""
        if len(token) > _MAX_TOKEN_CHARS:
            return "invalid"
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        known = self._cache.get(digest)
        if known is not None:
            assert known.expires_at is not None, "a verified token has an exp"
            if known.expires_at > time.time():
                return known
            del self._cache[digest]
            return "expired"
        if self._jwks is not None:
            return self._verify_with_jwks(token, digest)
        return self._check(token, self._key, digest)

    async def _verify_with_jwks(self, token: str, digest: bytes) -> Identity | str:
        jwks = self._jwks
        assert jwks is not None
        try:
            # PyJWKClient fetches with urllib, which blocks: on a worker thread.
            signing = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("cannot fetch the JWKS keys: %s", exc)
            return "invalid"
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            return "invalid"
        return self._check(token, signing.key, digest)

    def _check(self, token: str, key: Any, digest: bytes) -> Identity | str:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            return "expired"
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            log.debug("token refused: %s", exc)  # names the claim, never the token
            return "invalid"
        sub, exp, name = claims.get("sub"), claims.get("exp"), claims.get("name")
        if not isinstance(sub, str) or not 0 < len(sub) <= _MAX_SUB_CHARS:
            return "invalid"
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return "invalid"
        shown = name if isinstance(name, str) and name.strip() else sub
        identity = Identity(JWT, sub, shown.strip()[:_MAX_NAME_CHARS], expires_at=float(exp))
        if len(self._cache) >= _CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[digest] = identity
        return identity


def _public_key(path: Path) -> tuple[Any, tuple[str, ...]]:
    """The PEM public key in `path`, and the algorithm its kind signs with by default."""
    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read --jwt-public-key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--jwt-public-key {path} is not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, ("ES256",)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, ("EdDSA",)
    raise ConfigError(f"--jwt-public-key {path}: an RSA, EC or Ed25519 key is needed")
