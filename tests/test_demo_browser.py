"""The demo page in headless Chromium (Debian's ``chromium``, driven by Playwright).

Skips when the browser is missing, unless ``CHATKIT_STORES_REQUIRE_BROWSER=1`` (CI), which
makes it fail instead. ``CHATKIT_STORES_DEMO_SCREENSHOT=path`` saves the screenshot there
(docs/images/demo.png is made this way); otherwise it goes to the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_demo_server import DemoProcess, demo, png

__all__ = ["demo"]  # the fixture, shared with the HTTP tests

CHROMIUM = Path(os.environ.get("CHATKIT_STORES_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_ENV = "CHATKIT_STORES_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    if not CHROMIUM.is_file():
        return (
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHATKIT_STORES_CHROMIUM)"
        )
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium; skips (fails under CHATKIT_STORES_REQUIRE_BROWSER=1) without one."""
    if why := _missing():
        message = f"browser test cannot run: {why}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_page_sends_uploads_and_keeps_history(
    browser: Any, demo: DemoProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1100, "height": 720})
    outside: list[str] = []
    context.on("request", lambda r: None if r.url.startswith(demo.url) else outside.append(r.url))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(demo.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#demo-notice")).to_contain_text("not authentication")
    expect(page.locator("#user")).to_have_value("alice")

    # a message, answered by the streaming echo
    page.fill("#message", "Hello from Chromium")
    page.click("#send")
    assistant = page.locator(".item.assistant")
    expect(assistant).to_have_text("assistantYou said: Hello from Chromium.")
    expect(page.locator("#thread-title")).to_have_text("Hello from Chromium")
    expect(page.locator("#threads button")).to_have_count(1)
    thread_id = page.evaluate("location.hash.slice(1)")
    assert thread_id.startswith("thr_")

    # an image: attachments.create, upload to the signed URL, preview from the server
    page.set_input_files(
        "#file", files=[{"name": "gradient.png", "mimeType": "image/png", "buffer": png(48, 32)}]
    )
    pending = page.locator("#pending img")
    expect(pending).to_have_count(1)
    assert_image_loaded(page, "#pending img")
    page.fill("#message", "Here is a picture")
    page.click("#send")
    expect(assistant.nth(1)).to_contain_text("attached gradient.png (image/png)")
    expect(pending).to_have_count(0)
    expect(page.locator(".item.user img.preview")).to_have_count(1)
    assert_image_loaded(page, ".item.user img.preview")

    # reload: everything comes back from the store through threads.list and items.list
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator(".item")).to_have_count(4)
    texts = page.locator(".item p").all_inner_texts()
    assert texts == [
        "Hello from Chromium",
        "You said: Hello from Chromium.",
        "Here is a picture",
        "You said: Here is a picture and attached gradient.png (image/png).",
    ]
    assert_image_loaded(page, ".item.user img.preview")
    expect(page.locator(f'#threads button[data-thread-id="{thread_id}"]')).to_have_attribute(
        "aria-current", "true"
    )
    screenshot = Path(os.environ.get("CHATKIT_STORES_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000

    # another demo user sees none of it
    page.fill("#user", "bob")
    page.dispatch_event("#user", "change")
    expect(page.locator(".item")).to_have_count(0)
    expect(page.locator("#threads button")).to_have_count(0)
    expect(page.locator("#thread-title")).to_have_text("New thread")

    assert errors == [] and outside == []
    context.close()


def test_page_recovers_from_a_missing_thread(browser: Any, demo: DemoProcess) -> None:
    """A thread deleted elsewhere, a link to another user's thread, a bad or new user name."""
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    status = page.locator("#status")
    page.goto(demo.url)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    page.fill("#message", "first")
    page.click("#send")
    expect(page.locator(".item.assistant")).to_have_text("assistantYou said: first.")
    thread_id = page.evaluate("location.hash.slice(1)")

    # the thread is deleted behind the page's back; the next message cannot go there
    with httpx.Client(base_url=demo.url, timeout=30) as http:
        delete = {"type": "threads.delete", "params": {"thread_id": thread_id}}
        deleted = http.post("/chatkit", json=delete, headers={"X-Demo-User": "alice"})
        assert deleted.status_code == 200, deleted.text
    page.fill("#message", "second")
    page.click("#send")
    expect(status).to_contain_text("That thread no longer exists")
    expect(status).to_have_class("error")
    expect(page.locator("#thread-title")).to_have_text("New thread")
    expect(page.locator("#threads button")).to_have_count(0)
    expect(page.locator("#message")).to_have_value("second")  # kept, to send again
    assert page.evaluate("location.hash") == ""
    page.click("#send")  # now it starts a new thread
    expect(page.locator(".item.assistant")).to_have_text("assistantYou said: second.")
    expect(page.locator("#threads button")).to_have_count(1)
    expect(status).to_have_text("Answer stored.")
    alice_thread = page.evaluate("location.hash.slice(1)")
    assert alice_thread.startswith("thr_") and alice_thread != thread_id

    # a name the server would refuse is refused here, and the user stays who they were
    page.fill("#user", "not a name!")
    page.dispatch_event("#user", "change")
    expect(status).to_contain_text('"not a name!" is not a demo user name')
    expect(page.locator("#user")).to_have_value("alice")
    expect(page.locator(".item")).to_have_count(2)

    # another user: the status says so (not the last thread's item count)
    page.fill("#user", "bob")
    page.dispatch_event("#user", "change")
    expect(status).to_have_text("Now bob (a demo name, not authentication): 0 thread(s).")
    expect(page.locator(".item")).to_have_count(0)

    # bob follows a link to alice's thread: to bob it does not exist
    page.goto(f"{demo.url}/#{alice_thread}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(status).to_have_text("That thread does not exist, or is another user's.")
    expect(page.locator("#thread-title")).to_have_text("New thread")
    expect(page.locator(".item")).to_have_count(0)
    page.fill("#message", "bob's own")
    page.click("#send")
    expect(page.locator(".item.assistant")).to_have_text("assistantYou said: bob's own.")
    assert page.evaluate("location.hash.slice(1)") not in ("", alice_thread)

    assert errors == []
    context.close()


def assert_image_loaded(page: Any, selector: str) -> None:
    """The image under ``selector`` was fetched and decoded (not a broken-image icon)."""
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i?.complete && i.naturalWidth > 0 }",
        arg=selector,
        timeout=TIMEOUT_MS,
    )
    assert page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]") == [48, 32]
