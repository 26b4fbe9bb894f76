"""The model names an OpenAI-compatible upstream lists: GET {base}/models.

The OpenAI API reference, "List models": `{"object": "list", "data": [{"id":
..., "object": "model", "owned_by": ...}]}`. OpenAI's entries carry no
display name; some compatible servers (OpenRouter, LiteLLM) add a "name",
which becomes the label the page shows. Only the ids asked about are kept.
https://platform.openai.com/docs/api-reference/models/list
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

import httpx

__all__ = ["MAX_LISTING_BYTES", "parse_listing", "read_listing"]

# Listings of hosted catalogues (hundreds of models with descriptions) run
# to a few megabytes; past this the labels are not worth the memory.
MAX_LISTING_BYTES = 4 << 20
_LABEL_CHARS = 120


async def read_listing(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], wanted: Collection[str]
) -> dict[str, str]:
    """The labels the upstream at `url` gives the `wanted` model ids; {} if it has none.

    Raises:
        httpx.HTTPError: the request failed or timed out (the client's timeouts).
        ValueError: the answer is not a 2xx listing, or too long.
    """
    async with client.stream("GET", url, headers=headers) as response:
        if not response.is_success:
            raise ValueError(f"GET {url} answered {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_LISTING_BYTES:
                raise ValueError(f"GET {url} answered more than {MAX_LISTING_BYTES} bytes")
    return parse_listing(bytes(body), wanted)


def parse_listing(body: bytes, wanted: Collection[str]) -> dict[str, str]:
    """The "name" of each `wanted` id in a listing's "data"; pure.

    Raises:
        ValueError: not JSON, or no "data" list.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ValueError("the model listing is nested too deeply") from None
    except ValueError:
        raise ValueError("the model listing is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError('the model listing has no "data" list')
    labels: dict[str, str] = {}
    for entry in data:
        if not isinstance(entry, dict) or entry.get("id") not in wanted:
            continue
        name = entry.get("name")
        if isinstance(name, str) and name.strip():
            labels[entry["id"]] = " ".join(name.split())[:_LABEL_CHARS]
    return labels
