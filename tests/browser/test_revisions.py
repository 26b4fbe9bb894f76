"""Browser end-to-end: Regenerate, Edit, the model picker and the system prompt.

Debian's Chromium through Playwright against `python server.py`: the echo
model for regenerate and edit, the fake OpenAI upstream (on a thread of its
own, see test_limits) offering two models for the picker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_chat import (
    _conversation_id,
    _open_chat,
    _replies,
    _send,
    _stored,
    _transcript_texts,
)
from tests.browser.test_limits import _fake_upstream
from tests.browser.test_room import FAST_RETRY
from tests.conftest import OpenPage, page_opener
from tests.support.browser import token
from tests.support.servers import ServerProcess


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """Pages in fresh contexts; each test names its server's URL. Fails on JS errors."""
    with page_opener(browser, "about:blank") as open_:
        yield open_


def _reload(page: Page) -> None:
    page.reload()
    _open_chat(page)
    expect(page.locator("#transcript")).not_to_have_attribute("aria-busy", "true")


def test_regenerate_replaces_the_last_reply_and_survives_a_reload(
    open_page: OpenPage, spawn: Callable[..., ServerProcess]
) -> None:
    server = spawn("--echo-delay", "0.01", *FAST_RETRY)
    page = open_page(f"{server.url}/")
    _open_chat(page)
    message = f"again {token()}"
    _send(page, message)
    reply = _replies(page).last
    expect(reply).to_have_attribute("data-status", "complete")
    first_id = reply.get_attribute("data-message-id")
    # Regenerate is on the last reply only, and Edit on the user's message.
    expect(page.locator('#transcript button[data-action="regenerate"]')).to_have_count(1)
    expect(
        page.locator('#transcript li[data-role="user"] button[data-action="edit"]')
    ).to_have_count(1)
    reply.locator('button[data-action="regenerate"]').click()
    expect(_replies(page)).to_have_count(1)
    expect(_replies(page).last).not_to_have_attribute("data-message-id", first_id or "")
    expect(_replies(page).last).to_have_attribute("data-status", "complete")
    second_id = _replies(page).last.get_attribute("data-message-id")
    expected = [("user", message), ("assistant", f"You said: {message}")]
    assert _transcript_texts(page) == expected
    cid = _conversation_id(page)
    stored = _stored(page, server.url, cid)
    assert [m["id"] for m in stored["messages"]][1] == second_id
    _reload(page)
    expect(_replies(page)).to_have_count(1)
    expect(_replies(page).last).to_have_attribute("data-message-id", second_id or "")
    assert _transcript_texts(page) == expected


def test_edit_asks_again_from_the_edited_message_and_escape_cancels(
    open_page: OpenPage, spawn: Callable[..., ServerProcess]
) -> None:
    server = spawn("--echo-delay", "0.01", *FAST_RETRY)
    page = open_page(f"{server.url}/")
    _open_chat(page)
    first, second = f"first {token()}", f"second {token()}"
    for text in (first, second):
        _send(page, text)
        expect(_replies(page).last).to_have_attribute("data-status", "complete")
    expect(_replies(page)).to_have_count(2)
    users = page.locator('#transcript li[data-role="user"]')
    # Escape leaves the message as it was.
    users.first.locator('button[data-action="edit"]').click()
    editor = users.first.locator(".message-editor textarea")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(first)
    editor.fill("never sent")
    editor.press("Escape")
    expect(users.first.locator(".message-editor")).to_have_count(0)
    expect(users.first.locator(".message-content")).to_have_text(first)
    # Enter sends the new text: what followed is replaced by a new reply to it.
    edited = f"edited {token()}"
    users.first.locator('button[data-action="edit"]').click()
    editor = users.first.locator(".message-editor textarea")
    editor.fill(edited)
    editor.press("Enter")
    expect(_replies(page)).to_have_count(1)
    expect(_replies(page).last).to_have_attribute("data-status", "complete")
    expected = [("user", edited), ("assistant", f"You said: {edited}")]
    assert _transcript_texts(page) == expected
    # Another tab of the same person shows the same, and so does a reload.
    other = page.context.new_page()
    other.goto(page.url)
    _open_chat(other)
    expect(other.locator('#transcript li[data-role="assistant"]')).to_have_count(1)
    assert _transcript_texts(other) == expected
    _reload(page)
    expect(_replies(page)).to_have_count(1)
    assert _transcript_texts(page) == expected


def _chat_requests(fake: Any) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.method == "POST" and isinstance(r.body, dict)]


def test_the_model_picker_and_system_prompt_shape_the_upstream_request(
    open_page: OpenPage, spawn: Callable[..., ServerProcess]
) -> None:
    with _fake_upstream() as fake:
        fake.models = [
            {"id": "gpt-a", "object": "model", "owned_by": "fake", "name": "Model A"},
            {"id": "gpt-b", "object": "model", "owned_by": "fake", "name": "Model B"},
        ]
        server = spawn(
            "--model", "openai", "--model-url", fake.url, "--model-name", "gpt-a,gpt-b",
            *FAST_RETRY, env={"OPENAI_API_KEY": "sk-test"},
        )  # fmt: skip
        page = open_page(f"{server.url}/")
        _open_chat(page)
        page.locator("#chat-settings > summary").click()
        picker = page.locator("#chat-model")
        expect(picker.locator("option")).to_have_count(2)
        expect(picker).to_be_enabled()
        expect(picker).to_have_value("gpt-a")
        assert picker.locator("option").all_text_contents() == ["Model A", "Model B"]
        # Picking a model with no conversation open starts one with it.
        picker.select_option("gpt-b")
        status = page.locator("#chat-settings-status")
        expect(status).to_have_text("Replies now come from Model B.")
        page.locator("#chat-system").fill("Answer like a pirate.")
        page.locator("#chat-system-save").click()
        expect(status).to_have_text("System prompt saved.")
        _send(page, "hello there")
        reply = _replies(page).last
        expect(reply).to_have_attribute("data-status", "complete")
        expect(reply.locator(".message-model")).to_have_text("Model B")
        sent = _chat_requests(fake)[-1]
        assert sent["model"] == "gpt-b"
        assert sent["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
        assert sent["messages"][-1] == {"role": "user", "content": "hello there"}
        _reload(page)
        page.locator("#chat-settings > summary").click()
        expect(page.locator("#chat-model")).to_have_value("gpt-b")
        expect(page.locator("#chat-system")).to_have_value("Answer like a pirate.")
        # Back to the first model: the next reply comes from it, and another tab is told.
        other = page.context.new_page()
        other.goto(page.url)
        _open_chat(other)
        other.locator("#chat-settings > summary").click()
        expect(other.locator("#chat-model")).to_have_value("gpt-b")
        page.locator("#chat-model").select_option("gpt-a")
        expect(status).to_have_text("Replies now come from Model A.")
        expect(other.locator("#chat-model")).to_have_value("gpt-a")
        _send(page, "and now?")
        expect(_replies(page)).to_have_count(2)
        expect(_replies(page).last).to_have_attribute("data-status", "complete")
        assert _chat_requests(fake)[-1]["model"] == "gpt-a"
