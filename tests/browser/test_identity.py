"""Browser end-to-end for identity: who the page says you are, and two people apart.

Real Chromium through Playwright against `python server.py`. Two browser
contexts are two people (A and B): each has its own cookie jar, so its own
guest or account. Every page here is watched for Content Security Policy
violations (the `securitypolicyviolation` event and Chromium's console
reports), and a test fails on any, as on any uncaught error.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jwt
import pytest
from playwright._impl._api_structures import SetCookieParam  # not re-exported
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from tests.browser.test_chat import (
    _conversation_id,
    _open_chat,
    _replies,
    _send,
    _transcript_texts,
)
from tests.browser.test_room import FAST_RETRY
from tests.support.browser import token
from tests.support.servers import ServerProcess

GUEST_NAME = re.compile(r"^Guest [0-9a-f]{4}$")
SECRET = "My secret medical question"
# Reported by every page of this module when the CSP blocks something.
_WATCH_CSP = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""

OpenPerson = Callable[..., Page]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One guest-mode `python server.py` for the module, own database and secret."""
    folder = tmp_path_factory.mktemp("identity")
    server = ServerProcess("--port", "0", "--db", str(folder / "chat.sqlite3"), *FAST_RETRY)
    yield server
    server.kill()


@pytest.fixture
def accounts(spawn: Callable[..., ServerProcess]) -> ServerProcess:
    """A `python server.py --auth accounts` of the test's own."""
    return spawn("--auth", "accounts", *FAST_RETRY)


@contextlib.contextmanager
def _people(browser: Browser, default_url: str) -> Iterator[OpenPerson]:
    """Open each person (a fresh context) on a page; fail on JS errors and CSP violations."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def watch(page: Page) -> None:
        page.on("pageerror", lambda exc: problems.append(f"{page.url}: {exc}"))

        def on_console(message: ConsoleMessage) -> None:
            text = message.text
            if "CSP violation" in text or "Content Security Policy" in text:
                problems.append(f"{page.url}: {text}")

        page.on("console", on_console)

    def open_(url: str | None = None, cookies: Sequence[SetCookieParam] = ()) -> Page:
        context = browser.new_context()
        if cookies:
            context.add_cookies(list(cookies))
        context.set_default_timeout(10_000)
        context.add_init_script(_WATCH_CSP)
        context.on("page", watch)
        contexts.append(context)
        page = context.new_page()
        page.goto(url or default_url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == [], "uncaught errors or CSP violations in the page"


@pytest.fixture
def person(browser: Browser, server: ServerProcess) -> Iterator[OpenPerson]:
    """Open a new person on the module's guest-mode page."""
    with _people(browser, f"{server.url}/") as open_:
        yield open_


def _tab(page: Page) -> Page:
    """Another tab of the same person (same context, same cookies), on the same page."""
    tab = page.context.new_page()
    tab.goto(page.url.split("#")[0])
    return tab


def _name(page: Page) -> str:
    text: str = page.locator("#identity-name").inner_text()
    return text


def _wait_for_name(page: Page) -> str:
    """The name the header shows once GET /me has answered."""
    expect(page.locator("#identity-name")).not_to_have_text("…")
    return _name(page)


def _ask(page: Page, text: str) -> str:
    """Open the Chat view, send `text`, wait for its reply to end; the conversation's id."""
    _open_chat(page)
    _send(page, text)
    expect(_replies(page).last).to_have_attribute("data-status", "complete")
    return _conversation_id(page)


def _listed(page: Page) -> list[str]:
    """The titles the conversation list shows."""
    titles: list[str] = page.locator("#conversation-list .conversation-title").all_inner_texts()
    return titles


def _fetch(page: Page, method: str, path: str, body: str | None = None) -> dict[str, Any]:
    """fetch() from inside the page (its cookies, its origin): status and body text."""
    answer: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
               const init = {method, headers: {"content-type": "application/json"}};
               if (body !== null) init.body = body;
               const response = await fetch(path, init);
               return {status: response.status, text: await response.text()};
           }""",
        [method, path, body],
    )
    return answer


def _identity_panel(page: Page) -> None:
    """Open the identity bar's panel."""
    if page.locator("#identity").get_attribute("open") is None:
        page.locator("#identity > summary").click()


def _auth(page: Page, button: str, username: str, password: str) -> None:
    """Fill the sign-in form and press Sign in or Sign up."""
    _identity_panel(page)
    page.locator("#auth-username").fill(username)
    page.locator("#auth-password").fill(password)
    page.get_by_role("button", name=button, exact=True).click()


def _sign_out(page: Page) -> None:
    _identity_panel(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#identity-name")).to_have_text(GUEST_NAME)


# ---------------------------------------------------------------- guest


def test_the_header_shows_the_guest_name_and_a_rename_survives_a_reload(
    person: OpenPerson,
) -> None:
    page = person()
    assert GUEST_NAME.match(_wait_for_name(page)), _name(page)
    # A guest server has no accounts: no sign-in form, no sign-out.
    _identity_panel(page)
    expect(page.locator("#auth-form")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_hidden()
    name = f"Ada {token()}"
    page.locator("#display-name").fill(name)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#identity-name")).to_have_text(name)
    page.reload()
    expect(page.locator("#identity-name")).to_have_text(name)
    # An empty name is refused where it was typed.
    _identity_panel(page)
    page.locator("#display-name").fill("   ")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#rename-error")).to_have_text("The name must not be empty.")
    expect(page.locator("#identity-name")).to_have_text(name)


def test_another_person_never_sees_opens_posts_to_or_stops_a_conversation(
    person: OpenPerson, server: ServerProcess
) -> None:
    a = person()
    conversation_id = _ask(a, SECRET)
    before = _transcript_texts(a)
    assert before[0] == ("user", SECRET)

    b = person()
    assert _wait_for_name(b) != _wait_for_name(a)
    _open_chat(b)
    expect(b.locator("#conversation-list")).to_have_text("")
    assert _listed(b) == []
    # The page opens a conversation by its address (#c=<id>): for B, nothing.
    b.goto(f"{server.url}/#c={conversation_id}")
    expect(b.locator("#chat-error")).to_contain_text("not on")
    expect(b.locator("#transcript li")).to_have_count(0)
    expect(b.locator("#chat-title")).to_have_text("New conversation")
    assert SECRET not in b.content()
    # From B's own page, every way in answers 404, exactly like no conversation.
    path = f"/conversations/{conversation_id}"
    for method, rest, body in [
        ("GET", "", None),
        ("GET", "/events", None),
        ("POST", "/messages", json.dumps({"content": "B was here"})),
        ("POST", "/stop", None),
        ("PATCH", "", json.dumps({"title": "B's now"})),
        ("DELETE", "", None),
    ]:
        answer = _fetch(b, method, path + rest, body)
        assert answer["status"] == 404, (method, rest, answer)
        assert SECRET not in answer["text"]
    assert SECRET not in json.dumps(_fetch(b, "GET", "/conversations"))

    # A's conversation is as it was, in the page and on the server.
    assert _transcript_texts(a) == before
    stored = a.request.get(f"{server.url}{path}").json()
    assert stored["messages"][0]["content"] == SECRET
    assert len(stored["messages"]) == len(before)
    assert stored["title"] == SECRET
    a.reload()
    expect(a.locator("#transcript li[data-message-id]")).to_have_count(len(before))
    assert _listed(a) == [SECRET]


def test_rename_and_delete_in_the_list_and_another_tab_hears_of_the_deletion(
    person: OpenPerson, server: ServerProcess
) -> None:
    page = person()
    first = f"rename {token()}"
    conversation_id = _ask(page, first)
    row = page.locator("#conversation-list li").filter(has_text=first)
    row.get_by_role("button", name=f"Rename “{first}”").click()
    renamed = f"renamed {token()}"
    page.get_by_role("textbox", name="New title").fill(renamed)
    page.get_by_role("textbox", name="New title").press("Enter")
    expect(page.locator("#conversation-list .conversation-title")).to_have_text([renamed])
    expect(page.locator("#chat-title")).to_have_text(renamed)
    assert page.request.get(f"{server.url}/conversations/{conversation_id}").json()["title"] == (
        renamed
    )

    # Another tab of the same person has it open; the deletion reaches it as `deleted`.
    other = _tab(page)
    other.goto(f"{server.url}/#c={conversation_id}")
    expect(other.locator("#chat-status")).to_have_text("live")
    expect(other.locator("#transcript li[data-message-id]")).to_have_count(2)

    delete = page.get_by_role("button", name=f"Delete “{renamed}”")
    delete.click()
    # The first press only arms it.
    confirm = page.get_by_role("button", name=f"Confirm: Delete “{renamed}”")
    expect(confirm).to_have_text("Delete?")
    assert page.request.get(f"{server.url}/conversations/{conversation_id}").status == 200
    confirm.click()
    expect(page.locator("#conversation-list li")).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("New conversation")
    expect(other.locator("#chat-error")).to_have_text("That conversation was deleted.")
    expect(other.locator("#conversation-list li")).to_have_count(0)
    expect(other.locator("#transcript li")).to_have_count(0)
    assert page.request.get(f"{server.url}/conversations/{conversation_id}").status == 404


# ---------------------------------------------------------------- accounts


def test_sign_up_sign_out_and_sign_in_again_bring_the_conversations_back(
    browser: Browser, accounts: ServerProcess
) -> None:
    with _people(browser, f"{accounts.url}/") as open_:
        page = open_()
        guest = _wait_for_name(page)
        assert GUEST_NAME.match(guest)
        # A guest's conversation is kept when signing up.
        as_guest = f"before {token()}"
        kept = _ask(page, as_guest)
        username, password = f"ada_{token()}", "correct horse battery"
        _auth(page, "Sign up", username, password)
        expect(page.locator("#identity-name")).to_have_text(username)
        expect(page.locator("#auth-form")).to_be_hidden()
        expect(page.locator("#conversation-list .conversation-title")).to_have_text([as_guest])
        # The open conversation goes on, its stream now under the account.
        expect(page.locator("#chat-status")).to_have_text("live")
        assert _conversation_id(page) == kept
        as_account = f"after {token()}"
        _send(page, as_account)
        expect(_replies(page)).to_have_count(2)
        expect(_replies(page).last).to_have_attribute("data-status", "complete")

        _sign_out(page)
        expect(page.locator("#conversation-list li")).to_have_count(0)
        expect(page.locator("#transcript li")).to_have_count(0)
        assert page.request.get(f"{accounts.url}/conversations/{kept}").status == 404

        # Readable refusals next to the form.
        _auth(page, "Sign in", username, "not the password")
        expect(page.locator("#auth-error")).to_have_text(
            "Not signed in: wrong username or password"
        )
        _auth(page, "Sign up", username, password)
        expect(page.locator("#auth-error")).to_contain_text("is taken")
        _auth(page, "Sign up", f"bo_{token()}", "short")
        expect(page.locator("#auth-error")).to_contain_text("at least 8 characters")
        _auth(page, "Sign up", "a b", password)
        expect(page.locator("#auth-error")).to_contain_text("the username must be")

        _auth(page, "Sign in", username, password)
        expect(page.locator("#identity-name")).to_have_text(username)
        expect(page.locator("#auth-error")).to_be_hidden()
        expect(page.locator("#conversation-list .conversation-title")).to_have_text([as_guest])
        page.locator(f"[data-conversation-id='{kept}']").click()
        expect(page.locator("#transcript li[data-message-id]")).to_have_count(4)

        # Another person sees none of it.
        other = open_()
        _open_chat(other)
        expect(other.locator("#identity-name")).to_have_text(GUEST_NAME)
        expect(other.locator("#conversation-list li")).to_have_count(0)


def test_a_revoked_sign_in_makes_the_stream_ask_to_sign_in_again(
    browser: Browser, accounts: ServerProcess
) -> None:
    with _people(browser, f"{accounts.url}/") as open_:
        page = open_()
        _wait_for_name(page)
        username, password = f"cy_{token()}", "correct horse battery"
        _auth(page, "Sign up", username, password)
        expect(page.locator("#identity-name")).to_have_text(username)
        text = f"revoked {token()}"
        conversation_id = _ask(page, text)
        expect(page.locator("#chat-status")).to_have_text("live")

        # The session ends elsewhere (as a sign-out on another device would),
        # while this browser still holds its cookie.
        cookie = next(c for c in page.context.cookies() if c["name"] == "ssechat_session")
        request = urllib.request.Request(
            f"{accounts.url}/auth/logout",
            method="POST",
            headers={"cookie": f"ssechat_session={cookie['value']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        # The stream reconnects (as after a network drop) and is told `reauth`.
        page.locator("#chat-reconnect").evaluate("button => button.click()")
        expect(page.locator("#auth-error")).to_have_text("Your session has ended. Sign in again.")
        expect(page.locator("#identity-name")).to_have_text(GUEST_NAME)
        expect(page.locator("#auth-form")).to_be_visible()
        expect(page.locator("#conversation-list li")).to_have_count(0)
        expect(page.locator("#transcript li")).to_have_count(0)

        _auth(page, "Sign in", username, password)
        expect(page.locator("#conversation-list .conversation-title")).to_have_text([text])
        page.locator(f"[data-conversation-id='{conversation_id}']").click()
        expect(page.locator("#chat-status")).to_have_text("live")
        expect(page.locator("#transcript li[data-message-id]")).to_have_count(2)


def test_in_jwt_mode_the_room_stream_renews_when_its_token_expires(
    browser: Browser, spawn: Callable[..., ServerProcess]
) -> None:
    secret = "s" * 40
    server = spawn("--auth", "jwt", "--jwt-secret", secret, *FAST_RETRY)

    def token_cookie(lifetime_s: int) -> SetCookieParam:
        claims = {"sub": "host-user-7", "name": "Dee", "exp": int(time.time()) + lifetime_s}
        value = jwt.encode(claims, secret, algorithm="HS256")
        return {"name": "ssechat_token", "value": value, "url": server.url}

    with _people(browser, f"{server.url}/#room") as open_:
        # A host application set a token that expires in a few seconds.
        page = open_(cookies=[token_cookie(3)])
        expect(page.locator("#identity-name")).to_have_text("Dee")
        expect(page.locator("#status")).to_have_text("live")
        # The name comes from the token: no rename, no sign-in here.
        _identity_panel(page)
        expect(page.locator("#rename-form")).to_be_hidden()
        expect(page.locator("#auth-form")).to_be_hidden()
        # The host renews its cookie; the open stream still runs on the old token
        # and ends at its exp with `reauth`: the page asks /me, then reopens.
        page.context.add_cookies([token_cookie(3600)])
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        with page.expect_request(re.compile(r"/events\b"), timeout=15_000):
            pass
        assert f"{server.url}/me" in asked, asked
        expect(page.locator("#status")).to_have_text("live")
        said = f"renewed {token()}"
        page.locator("#message-input").fill(said)
        page.locator("#message-input").press("Enter")
        expect(page.locator("#messages li.message").filter(has_text=said)).to_have_count(1)


# ---------------------------------------------------------------- other sites


class _AttackPage(http.server.BaseHTTPRequestHandler):
    """Serves one HTML page (the class's `html`) at /, on another origin."""

    html = b""

    def do_GET(self) -> None:
        body = self.html if self.path == "/" else b"<!doctype html><title>ok</title>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test's output is not the place for an access log."""


@contextlib.contextmanager
def _attack_site(html: str) -> Iterator[str]:
    """A second HTTP server on 127.0.0.2 (another site than 127.0.0.1) serving `html`."""
    handler = type("Handler", (_AttackPage,), {"html": html.encode()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


_ATTACK = """<!doctype html>
<html><head><meta charset="utf-8"><title>free prizes</title></head>
<body>
<iframe name="sink" id="sink"></iframe>
<form id="forged" method="POST" action="{target}/conversations/{id}/messages"
      enctype="text/plain" target="sink">
  <input name='{{"content":"forged by a form","x":"' value='"}}'>
</form>
<script>
window.results = {{}};
async function attempt(name, url, init) {{
  try {{
    const response = await fetch(url, init);
    window.results[name] = "answered " + response.status + " (" + response.type + ")";
  }} catch (err) {{
    window.results[name] = "rejected";
  }}
}}
(async () => {{
  await attempt("json", "{target}/conversations", {{
    method: "POST", credentials: "include",
    headers: {{"content-type": "application/json"}}, body: "{{}}"}});
  await attempt("no-cors", "{target}/conversations/{id}/messages", {{
    method: "POST", mode: "no-cors", credentials: "include",
    headers: {{"content-type": "text/plain"}},
    body: JSON.stringify({{content: "forged by no-cors"}})}});
  await attempt("read", "{target}/conversations", {{credentials: "include"}});
  await attempt("rename", "{target}/conversations/{id}", {{
    method: "PATCH", credentials: "include",
    headers: {{"content-type": "application/json"}}, body: '{{"title":"pwned"}}'}});
  document.getElementById("sink").addEventListener("load", () => {{ window.done = true; }});
  document.getElementById("forged").submit();
}})();
</script>
</body></html>
"""


def test_a_page_on_another_site_changes_nothing_with_the_victims_cookies(
    person: OpenPerson, server: ServerProcess
) -> None:
    victim = person()
    conversation_id = _ask(victim, SECRET)
    before = _transcript_texts(victim)
    listed_before = victim.request.get(f"{server.url}/conversations").json()

    html = _ATTACK.format(target=server.url, id=conversation_id)
    with _attack_site(html) as attack_url:
        attacker = victim.context.new_page()
        attacker.goto(attack_url)
        attacker.wait_for_function("() => window.done === true")
        results: dict[str, str] = attacker.evaluate("() => window.results")
        attacker.close()
    # The CORS preflight is refused, so neither JSON write is even sent; the
    # credentialed read is not readable; the no-cors write goes without the
    # SameSite=Lax cookie, as a stranger.
    assert results["json"] == "rejected", results
    assert results["rename"] == "rejected", results
    assert results["read"] == "rejected", results
    assert results["no-cors"] == "answered 0 (opaque)", results

    assert victim.request.get(f"{server.url}/conversations").json() == listed_before
    stored = victim.request.get(f"{server.url}/conversations/{conversation_id}").json()
    assert stored["title"] == SECRET
    first = stored["messages"][0]
    assert (first["role"], first["content"]) == ("user", SECRET)
    assert len(stored["messages"]) == len(before)
    assert _transcript_texts(victim) == before
    victim.reload()
    expect(victim.locator("#transcript li[data-message-id]")).to_have_count(len(before))
    assert _listed(victim) == [SECRET]


def test_no_csp_violations_across_the_room_the_chat_and_the_identity_bar(
    person: OpenPerson, server: ServerProcess
) -> None:
    page = person(f"{server.url}/#room")
    _wait_for_name(page)
    said = f"room {token()}"
    page.locator("#message-input").fill(said)
    page.locator("#message-input").press("Enter")
    expect(page.locator("#messages li.message").filter(has_text=said)).to_have_count(1)
    page.locator("details.settings > summary").click()
    page.locator("#transport-ws").check()
    expect(page.locator("#status")).to_have_text("live")
    page.locator("#transport-sse").check()
    _identity_panel(page)
    conversation_id = _ask(page, f"csp {token()}")
    page.get_by_role("button", name=re.compile("^Rename ")).click()
    page.get_by_role("textbox", name="New title").press("Escape")
    page.locator('[data-view-target="room"]').click()
    page.goto(f"{server.url}/#c={conversation_id}")
    expect(page.locator("#chat-status")).to_have_text("live")


def test_the_csp_watcher_reports_a_blocked_inline_script(
    browser: Browser, server: ServerProcess
) -> None:
    # The silence the tests above rely on means something: a violation is heard.
    context = browser.new_context()
    try:
        context.add_init_script(_WATCH_CSP)
        page = context.new_page()
        seen: list[str] = []
        page.on("console", lambda message: seen.append(message.text))
        page.goto(f"{server.url}/")
        with page.expect_console_message(lambda m: "CSP violation" in m.text):
            page.evaluate(
                """() => {
                       const script = document.createElement("script");
                       script.textContent = "window.inlineRan = true";
                       document.body.append(script);
                   }"""
            )
        assert page.evaluate("() => window.inlineRan === undefined")
        assert any("script-src" in text for text in seen), seen
    finally:
        context.close()
