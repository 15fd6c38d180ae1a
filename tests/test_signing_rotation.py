"""Rotating the disk store's signing secret with URLs in flight (docs/encryption.md).

URLs signed with the old secret keep working while it is listed after the new one, and are
refused, saying why, once it is removed; new URLs are signed with the first secret.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from chatkit.types import AttachmentCreateParams
from starlette.applications import Starlette
from starlette.routing import Mount

from chatkit_stores import DiskAttachmentStore, MemoryStore
from chatkit_stores.demo.settings import DemoSettings, SettingsError
from chatkit_stores.files.signing import OLD_SECRETS_ENV, SECRET_ENV, Grant, Signer

OLD = "old-secret-" + "o" * 32
NEW = "new-secret-" + "n" * 32
BASE_URL = "http://files.test/files"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
DOCS = Path(__file__).resolve().parent.parent / "docs" / "encryption.md"
CTX = {"user_id": "alice"}


def disk(store: MemoryStore[Any], root: Path, secret: Any) -> DiskAttachmentStore[Any]:
    return DiskAttachmentStore(store, root, base_url=BASE_URL, secret=secret)


def client(files: DiskAttachmentStore[Any]) -> httpx.AsyncClient:
    app = Starlette(routes=[Mount("/files", files.asgi_app())])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


async def post(files: DiskAttachmentStore[Any], url: str) -> httpx.Response:
    async with client(files) as http:
        return await http.post(url, files={"file": ("a.png", PNG, "image/png")})


async def get(files: DiskAttachmentStore[Any], url: str) -> httpx.Response:
    async with client(files) as http:
        return await http.get(url)


def without_key_id(url: str) -> str:
    """The URL as versions before key ids signed it (no ``k``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "k"]
    return parts._replace(query=urlencode(query)).geturl()


async def test_urls_in_flight_survive_a_rotation_until_the_old_secret_is_removed(
    tmp_path: Path,
) -> None:
    store: MemoryStore[Any] = MemoryStore()
    before = disk(store, tmp_path, OLD)
    params = AttachmentCreateParams(name="later.png", size=len(PNG), mime_type="image/png")
    pending = [await before.create_attachment(params, CTX) for _ in range(2)]
    for attachment in pending:
        await store.save_attachment(attachment, CTX)
    uploads = [str(a.upload_descriptor.url) for a in pending if a.upload_descriptor]
    shown = await before.upload(PNG, name="shown.png", mime_type="image/png", context=CTX)
    old_preview = str(shown.preview_url)
    old_download = before.download_url(shown.id, CTX)

    rotated = disk(store, tmp_path, [NEW, OLD])
    assert (await post(rotated, uploads[0])).status_code == 200, "an upload in flight"
    for url in (old_preview, old_download, without_key_id(old_download)):
        response = await get(rotated, url)
        assert response.status_code == 200 and response.content == PNG, url
    fresh = (await store.load_attachment(shown.id, CTX)).preview_url
    assert dict(parse_qsl(urlsplit(str(fresh)).query))["k"] == rotated.signer.key_ids[0]
    assert rotated.signer.key_ids[0] != before.signer.key_ids[0], "signed with the new secret"
    assert (await get(rotated, str(fresh))).status_code == 200
    assert (await get(before, str(fresh))).status_code == 403, "an instance not yet rotated"

    after = disk(store, tmp_path, NEW)
    for url in (old_preview, old_download, uploads[1]):
        response = (await post(after, url)) if url == uploads[1] else (await get(after, url))
        assert response.status_code == 403, url
        assert "signed with a secret that is no longer accepted" in response.text
    refused = await get(after, without_key_id(old_download))
    assert refused.status_code == 403 and "bad signature" in refused.text
    assert (await get(after, str(fresh))).status_code == 200
    assert (await get(after, after.download_url(shown.id, CTX))).status_code == 200


def test_a_single_secret_still_works_and_names_its_key() -> None:
    signer = Signer(OLD)
    query = dict(parse_qsl(signer.query(Grant("GET", "alice", "atc_1"), 60)))
    assert set(query) == {"t", "e", "k", "s"} and query["k"] == signer.key_ids[0]
    assert signer.verify("GET", "atc_1", query) == Grant("GET", "alice", "atc_1")
    assert Signer([OLD]).key_ids == signer.key_ids
    assert OLD.encode() not in query["k"].encode() and len(query["k"]) == 8


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ([], "secret= is an empty list: give at least one signing secret"),
        ((), "secret= is an empty list"),
        ([NEW, "short"], "Signing secret 2 must be at least 32 bytes"),
        ([NEW, ""], "secret number 2 is empty"),
        ("short", "The signing secret must be at least 32 bytes"),
    ],
)
def test_bad_secret_lists_are_a_clear_constructor_error(
    secret: Any, says: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        disk(MemoryStore(), tmp_path, secret)


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    query = Signer(OLD).query(Grant("GET", "alice", "atc_1"), 60)
    monkeypatch.setenv(SECRET_ENV, NEW)
    monkeypatch.setenv(OLD_SECRETS_ENV, f" {OLD} , ,{'x' * 32}")
    files = disk(MemoryStore(), tmp_path, None)
    assert len(files.signer.key_ids) == 3 and files.signer.key_ids[0] == Signer(NEW).key_ids[0]
    assert files.signer.verify("GET", "atc_1", dict(parse_qsl(query))).tenant == "alice"
    monkeypatch.delenv(OLD_SECRETS_ENV)
    with pytest.raises(Exception, match="no longer accepted"):
        disk(MemoryStore(), tmp_path, None).signer.verify("GET", "atc_1", dict(parse_qsl(query)))


def test_demo_settings_take_old_secrets() -> None:
    settings = DemoSettings.from_env({SECRET_ENV: NEW, OLD_SECRETS_ENV: f"{OLD},{'x' * 32}"})
    assert settings.signing_secrets == [NEW, OLD, "x" * 32]
    assert DemoSettings.from_env({SECRET_ENV: NEW}).signing_secrets == [NEW]
    with pytest.raises(SettingsError, match=f"{OLD_SECRETS_ENV}: secret 2 is 5 bytes"):
        DemoSettings.from_env({SECRET_ENV: NEW, OLD_SECRETS_ENV: f"{OLD},short"})
    with pytest.raises(SettingsError, match=f"{OLD_SECRETS_ENV} needs {SECRET_ENV}"):
        DemoSettings.from_env({OLD_SECRETS_ENV: OLD})


def test_the_documented_rotation_example_runs(tmp_path: Path) -> None:
    """The python fence of docs/encryption.md's rotation section builds a working store."""
    text = DOCS.read_text()
    section = text[text.index("## Rotating signing secrets") :]
    body = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {
        "DiskAttachmentStore": DiskAttachmentStore,
        "store": MemoryStore(),
        "new_secret": NEW,
        "old_secret": OLD,
    }
    exec(body.replace('"/srv/uploads"', repr(str(tmp_path))), namespace)
    files = namespace["files"]
    assert files.signer.key_ids == Signer([NEW, OLD]).key_ids
