"""What a request carries, checked: JSON bodies, their text members, ids from the path and query.

Each raises `ClientError` with the status to answer, so a handler reads as the happy path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from sse.app.values import JSON_TYPE, Request
from sse.errors import ClientError

__all__ = ["last_event_id", "parse_json_object", "path_conversation_id", "require_text"]


def parse_json_object(req: Request, body: bytes) -> dict[str, object]:
    """The body as a JSON object.

    Raises:
        ClientError: 415 for a non-JSON media type, 400 for anything not a JSON object.
    """
    # A missing type is refused too: a cross-site `fetch(..., {mode: "no-cors"})`
    # can send a body without a type, but never `application/json` without a
    # CORS preflight (Fetch, "CORS-safelisted request-header").
    media = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != JSON_TYPE and not media.endswith("+json"):
        got = repr(media) if media else "no Content-Type"
        raise ClientError(415, f"expected a JSON body (Content-Type: {JSON_TYPE}), got {got}")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ClientError(400, "body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # Deep nesting ("[[[[...") within the size limit would otherwise be a 500.
        raise ClientError(400, "body is nested too deeply") from None
    except ValueError as exc:
        # int() refuses a number of more than 4,300 digits (CPython's limit).
        raise ClientError(400, f"body holds a number too long to read: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(400, "body must be a JSON object")
    return value


def require_text(obj: Mapping[str, object], name: str) -> str:
    """The string member `name` of a JSON object.

    Raises:
        ClientError: 400 when it is missing, not a string, or not encodable text.
    """
    if name not in obj:
        raise ClientError(400, f'missing "{name}"')
    value = obj[name]
    if not isinstance(value, str):
        raise ClientError(400, f'"{name}" must be a string')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ClientError(400, f'"{name}" holds a lone surrogate, which is not text') from None
    return value


def last_event_id(req: Request) -> str | None:
    """Where a stream resumes: the Last-Event-ID header, else the `last_event_id` parameter."""
    # The header wins: EventSource sends it on every reconnect, while the query
    # parameter is for a first connection (and a WebSocket, which cannot send headers).
    return req.headers.get("last-event-id", req.query.get("last_event_id")) or None


def path_conversation_id(params: Mapping[str, str]) -> str:
    """The conversation id from the path, in canonical form.

    Raises:
        ClientError: 404 when it is not a UUID (so it cannot name a conversation).
    """
    raw = params["id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ClientError(404, f"no conversation {raw}") from None
