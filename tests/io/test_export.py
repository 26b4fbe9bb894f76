"""Exporting a conversation over real sockets: Markdown and JSON files, their names, who may."""

from __future__ import annotations

import json
import uuid

import pytest

from sse.app.export import content_disposition, export_markdown
from sse.chat.store.base import ConversationSummary, StoredMessage, Transcript
from sse.io.server import Server
from tests.support.client import CookieJar, EventStream, events_until, json_object, request
from tests.support.servers import MakeServer

JSON = [("content-type", "application/json")]


async def _conversation_with_reply(server: Server, content: str) -> str:
    created = await request(server.address, "POST", "/conversations")
    assert created.status == 201
    cid = str(json_object(created)["id"])
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    body = json.dumps({"content": content}).encode()
    posted = await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    assert posted.status == 202
    await events_until(stream, "done")
    await stream.close()
    return cid


async def _rename(server: Server, cid: str, title: str) -> None:
    body = json.dumps({"title": title}).encode()
    renamed = await request(server.address, "PATCH", f"/conversations/{cid}", JSON, body)
    assert renamed.status == 200


async def test_json_export_is_the_saved_transcript(server: Server) -> None:
    cid = await _conversation_with_reply(server, "What is SSE?")
    transcript = json_object(await request(server.address, "GET", f"/conversations/{cid}"))
    response = await request(server.address, "GET", f"/conversations/{cid}/export?format=json")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="what-is-sse.json"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    user, reply = transcript["messages"]
    assert json.loads(response.body) == {
        "id": cid,
        "title": "What is SSE?",
        "created_at": transcript["created_at"],
        "updated_at": transcript["updated_at"],
        "messages": [
            {
                "role": "user",
                "content": "What is SSE?",
                "status": "complete",
                "model": None,
                "created_at": user["created_at"],
                "finish_reason": None,
                "error": None,
            },
            {
                "role": "assistant",
                "content": "You said: What is SSE?",
                "status": "complete",
                "model": "echo",
                "created_at": reply["created_at"],
                "finish_reason": "stop",
                "error": None,
            },
        ],
    }
    default = await request(server.address, "GET", f"/conversations/{cid}/export")
    assert (default.status, default.body) == (200, response.body)


async def test_markdown_export_has_a_heading_per_message(server: Server) -> None:
    cid = await _conversation_with_reply(server, "hello *there*\n\nworld")
    response = await request(server.address, "GET", f"/conversations/{cid}/export?format=md")
    assert response.status == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"].endswith('.md"')
    title = json_object(await request(server.address, "GET", f"/conversations/{cid}"))["title"]
    assert response.body.decode() == (
        f"# {title}\n\n"
        "## You\n\nhello *there*\n\nworld\n\n"
        "## Assistant (built-in echo model)\n\nYou said: hello *there*\n\nworld\n"
    )


async def test_someone_else_gets_404_as_for_a_missing_conversation(server: Server) -> None:
    cid = await _conversation_with_reply(server, "mine")
    stranger = CookieJar()
    absent = str(uuid.uuid4())
    for fmt in ("json", "md"):
        theirs = await request(
            server.address, "GET", f"/conversations/{cid}/export?format={fmt}", jar=stranger
        )
        missing = await request(
            server.address,
            "GET",
            f"/conversations/{absent}/export?format={fmt}",
            jar=stranger,
        )
        assert theirs.status == missing.status == 404
        assert json_object(theirs) == {"error": f"no conversation {cid}"}
        assert json_object(missing) == {"error": f"no conversation {absent}"}
        assert "content-disposition" not in theirs.headers


@pytest.mark.parametrize(
    ("title", "disposition"),
    [
        ('say "hi" / ../etc', 'attachment; filename="say-hi-etc.md"'),
        (
            "Café über naïve",
            'attachment; filename="cafe-uber-naive.md"; '
            "filename*=UTF-8''Caf%C3%A9-%C3%BCber-na%C3%AFve.md",
        ),
        (
            "日本語のタイトル",
            "attachment; filename=\"conversation.md\"; filename*=UTF-8''"
            "%E6%97%A5%E6%9C%AC%E8%AA%9E%E3%81%AE%E3%82%BF%E3%82%A4%E3%83%88%E3%83%AB.md",
        ),
        ("....", 'attachment; filename="conversation.md"'),
        ("x" * 200, f'attachment; filename="{"x" * 60}.md"'),
    ],
)
async def test_title_gives_a_safe_file_name(server: Server, title: str, disposition: str) -> None:
    cid = await _conversation_with_reply(server, "hi")
    await _rename(server, cid, title)
    response = await request(server.address, "GET", f"/conversations/{cid}/export?format=md")
    assert response.status == 200
    assert response.headers["content-disposition"] == disposition
    assert response.body.decode().startswith(f"# {title}\n\n## You\n\nhi\n\n")


async def test_unknown_format_is_400_naming_the_allowed_ones(server: Server) -> None:
    cid = await _conversation_with_reply(server, "hi")
    response = await request(server.address, "GET", f"/conversations/{cid}/export?format=pdf")
    assert response.status == 400
    assert json_object(response) == {"error": "format must be one of: json, md"}


async def test_head_gives_the_headers_without_a_body(server: Server) -> None:
    cid = await _conversation_with_reply(server, "hi")
    response = await request(server.address, "HEAD", f"/conversations/{cid}/export?format=md")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="hi.md"'
    got = await request(server.address, "GET", f"/conversations/{cid}/export?format=md")
    assert response.headers["content-length"] == str(len(got.body))


async def test_stopped_reply_says_so_in_markdown(make_server: MakeServer) -> None:
    server = await make_server(echo_delay_s=0.02)
    created = await request(server.address, "POST", "/conversations")
    cid = str(json_object(created)["id"])
    stream = await EventStream.open(server.address, f"/conversations/{cid}/events")
    body = json.dumps({"content": "word " * 500}).encode()
    await request(server.address, "POST", f"/conversations/{cid}/messages", JSON, body)
    await events_until(stream, "delta")
    assert (await request(server.address, "POST", f"/conversations/{cid}/stop")).status == 200
    await events_until(stream, "done")
    await stream.close()
    md = await request(server.address, "GET", f"/conversations/{cid}/export?format=md")
    assert md.body.decode().endswith("\n\n_(stopped)_\n")


def _transcript(*messages: StoredMessage) -> Transcript:
    return Transcript(ConversationSummary("c1", "T", 1.0, 2.0), messages)


@pytest.mark.parametrize(
    ("reply", "tail"),
    [
        (
            StoredMessage("m", "assistant", "par", "cancelled", "cancelled", "echo", 1.0),
            "_(stopped)_",
        ),
        (
            StoredMessage("m", "assistant", "par", "interrupted", None, "echo", 1.0),
            "_(interrupted)_",
        ),
        (
            StoredMessage("m", "assistant", "", "error", "error", "echo", 1.0, error="model down"),
            "_(error: model down)_",
        ),
        (
            StoredMessage("m", "assistant", "so fa", "streaming", None, "x", 1.0),
            "_(still streaming)_",
        ),
    ],
)
def test_markdown_marks_a_reply_cut_short(reply: StoredMessage, tail: str) -> None:
    text = export_markdown(_transcript(reply), {"echo": "Echo"}).decode()
    model = "Echo" if reply.model == "echo" else reply.model
    content = f"{reply.content}\n\n" if reply.content else ""
    assert text == f"# T\n\n## Assistant ({model})\n\n{content}{tail}\n"


def test_a_slug_is_never_a_hidden_file_or_longer_than_60() -> None:
    assert content_disposition(".htaccess", "json") == 'attachment; filename="htaccess.json"'
    wide = content_disposition("é" * 100, "md")
    assert wide.count("%C3%A9") == 60
