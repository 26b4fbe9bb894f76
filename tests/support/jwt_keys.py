"""Keys and tokens for the JWT tests: RSA and EC key pairs, PyJWT tokens, a JWKS server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = [
    "HMAC_SECRET",
    "KeyPair",
    "b64url",
    "ec_pair",
    "hs256_by_hand",
    "jwks_server",
    "rsa_pair",
    "token",
    "unsigned_token",
]

HMAC_SECRET = "a-shared-secret-of-at-least-32-characters!"


@dataclass(frozen=True)
class KeyPair:
    """A private key to sign with and its public half as PEM, for `--jwt-public-key`."""

    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    public_pem: bytes
    algorithm: str

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public_pem)
        return path

    def jwk(self, kid: str) -> dict[str, Any]:
        """The public key as a JWK (RFC 7517) named `kid`."""
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            key = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            key = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**key, "kid": kid, "use": "sig", "alg": self.algorithm}


def _pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def rsa_pair() -> KeyPair:
    """A new RSA 2048 key pair (RS256)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(private, _pem(private), "RS256")


def ec_pair() -> KeyPair:
    """A new EC P-256 key pair (ES256)."""
    private = ec.generate_private_key(ec.SECP256R1())
    return KeyPair(private, _pem(private), "ES256")


def token(
    key: str | KeyPair,
    *,
    sub: str | None = "alice",
    name: str | None = "Alice",
    exp_in_s: float | None = 600,
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A token signed with `key` (a shared secret: HS256; a pair: its algorithm)."""
    payload: dict[str, Any] = dict(claims)
    if sub is not None:
        payload["sub"] = sub
    if name is not None:
        payload["name"] = name
    if exp_in_s is not None:
        payload["exp"] = int(time.time() + exp_in_s)
    headers = {"kid": kid} if kid is not None else None
    if isinstance(key, str):
        return jwt.encode(payload, key, algorithm="HS256", headers=headers)
    return jwt.encode(payload, key.private, algorithm=key.algorithm, headers=headers)


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515, section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _claims(sub: str = "mallory") -> dict[str, Any]:
    return {"sub": sub, "name": "Mallory", "exp": int(time.time() + 600)}


def unsigned_token() -> str:
    """`alg: none`: a header, a payload and an empty signature."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(_claims())}."


def hs256_by_hand(secret: bytes) -> str:
    """HS256 with `secret` as the HMAC key (PyJWT refuses a PEM as one: done by hand)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(_claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


@contextmanager
def jwks_server(keys: list[dict[str, Any]]) -> Iterator[str]:
    """A JWKS endpoint on 127.0.0.1 serving `{"keys": keys}`; yields its URL."""
    body = json.dumps({"keys": keys}).encode()

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/.well-known/jwks.json"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
