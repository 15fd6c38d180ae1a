"""The suite's verdict on two stores it did not write: a correct one, and openai-chatkit's own.

``contract_store.ContractStore`` is written only from ChatKit's contract (plain dicts, its own
``thread-<uuid4>`` ids, the tenant from ``context["org"]``, naive timestamps read as local time).
It must pass the whole suite, stateful test included, with a plain subclass that turns off the
policies it does not follow, in UTC and in America/Los_Angeles: the machine's time zone must not
change the verdict.

openai-chatkit's test store (``tests/helpers/mock_store.py`` of openai/chatkit-python, not in
its sdist) is run through ``chatkit-stores conformance`` when ``CHATKIT_STORES_CHATKIT_MOCK_STORE``
names a copy of that file. With the policies it does not follow turned off, exactly its real
bugs must fail, each with a message saying what breaks; they are listed as the command's
``expected_failures`` (strict), so the run passes only while each of them still fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

MOCK_STORE_ENV = "CHATKIT_STORES_CHATKIT_MOCK_STORE"
CONFORMANCE = [sys.executable, "-m", "chatkit_stores", "conformance"]

CONTRACT_SUITE = """
import uuid

import pytest
import pytest_asyncio

from chatkit_stores.testing import Capabilities, StoreTests
from contract_store import ContractStore


class TestContractStore(StoreTests):
    @pytest_asyncio.fixture
    async def store(self):
        yield ContractStore()

    @pytest.fixture
    def make_context(self):
        return lambda: {"org": uuid.uuid4().hex}

    @pytest.fixture
    def capabilities(self):
        return Capabilities.opt_out(
            tenant_id_scopes="ids are global; each object remembers its org",
            argument_errors="ChatKit's server never passes a bad limit or order",
            unknown_cursor_not_found="an unknown cursor raises LookupError",
            thread_delete_removes_attachments="chatkit/store.py: 'a thread and its items'",
            insert_if_absent_adds="add_thread_item replaces",
            id_prefixes="ids are thread-<uuid4>",
            naive_is_utc="a naive timestamp is local time, as ChatKit's server writes it",
            merged_thread_saves="the last save wins",
            delete_wins_over_saves="a save after a delete writes the thread again",
            durability="in memory",
        )
"""


def failures(junit: Path) -> dict[str, str]:
    """Test name -> failure message of every failed or erroring test of a JUnit XML report."""
    found: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            found[case.attrib["name"]] = f"{bad.attrib.get('message', '')}\n{bad.text or ''}"
    return found


def stateful_outcome(junit: Path) -> str:
    """How the stateful test ended: "passed", "failed" or "skipped"."""
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.attrib["name"] == "test_stateful_matches_the_reference_model":
            for outcome in ("failure", "error", "skipped"):
                if case.find(outcome) is not None:
                    return "skipped" if outcome == "skipped" else "failed"
            return "passed"
    return "skipped"


def counts(junit: Path) -> dict[str, int]:
    """tests, failures, errors and skipped of a JUnit XML report."""
    suite = next(ET.parse(junit).getroot().iter("testsuite"))
    return {k: int(suite.attrib[k]) for k in ("tests", "failures", "errors", "skipped")}


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles"])
def test_contract_store_passes_in_any_time_zone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """A correct store written from ChatKit's contract alone passes with a plain subclass."""
    pytester.makepyfile(contract_store=(HERE / "contract_store.py").read_text())
    pytester.makepyfile(test_contract=CONTRACT_SUITE)
    monkeypatch.setenv("TZ", zone)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    junit = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=strict",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "-W",
        "ignore:Direct usage of named widget classes is deprecated:DeprecationWarning",
        f"--junitxml={junit}",
        "-q",
        timeout=900,
    )
    failed = failures(junit)
    assert not failed and result.ret == 0, "\n".join(f"{k}: {v[:300]}" for k, v in failed.items())
    ran = counts(junit)
    assert ran["tests"] - ran["skipped"] >= 60, f"the suite barely ran: {ran}"
    assert "skipped" not in stateful_outcome(junit), "the stateful test must run"


MOCK_CONFORMANCE = """
import tempfile
import uuid
from pathlib import Path

from chatkit_stores.testing import Capabilities
from tests._types import RequestContext
from tests.helpers.mock_store import SQLiteStore


def make_store():
    return SQLiteStore(str(Path(tempfile.mkdtemp()) / "chat.db"))


def make_context():
    return RequestContext(user_id=uuid.uuid4().hex)


capabilities = Capabilities.opt_out(
    tenant_id_scopes="ids are primary keys of their own",
    argument_errors="limit and order are passed to SQL unchecked",
    unknown_cursor_not_found="an unknown thread cursor raises ValueError",
    thread_delete_removes_attachments="deletes a thread and its items, as documented",
    insert_if_absent_adds="a re-add is a primary-key error",
    thread_resave_keeps_position="save_thread is DELETE + INSERT",
    id_entropy="ChatKit's default ids (32 random bits)",
    naive_is_utc="timestamps are ordered as ISO text",
    merged_thread_saves="the last save wins",
    delete_wins_over_saves="a save after a delete writes the thread again",
    durability="not tested here",
)
"""

MOCK_REAL_BUGS = {
    # Equal timestamps: `created_at > ?` after a cursor skips the cursor's ties.
    "test_items_paginate[1-asc]": "equal timestamps lose items across pages",
    "test_items_paginate[1-desc]": "equal timestamps lose items across pages",
    "test_items_paginate[2-asc]": "equal timestamps lose items across pages",
    "test_items_paginate[2-desc]": "equal timestamps lose items across pages",
    "test_items_paginate[3-asc]": "equal timestamps lose items across pages",
    "test_items_paginate[3-desc]": "equal timestamps lose items across pages",
    "test_items_paginate[7-asc]": "equal timestamps lose items across pages",
    "test_items_paginate[7-desc]": "equal timestamps lose items across pages",
    "test_items_paginate[50-desc]": "ties come back in no particular order",
    "test_threads_paginate[asc]": "equal timestamps lose threads across pages",
    "test_threads_paginate[desc]": "equal timestamps lose threads across pages",
    # Aware timestamps ordered as ISO text, by wall clock.
    "test_aware_timestamps_order_by_instant": "ordered as ISO text",
    # load_attachment has no user filter ("TODO: consider checking user_id").
    "test_other_tenant_sees_nothing": "load_attachment does not check the user",
    "test_foreign_attachment_refused": "a user adopts another's file by its id",
    # save_item is an UPDATE only.
    "test_save_item_inserts_unknown": "save_item of an unknown id is dropped",
    # The cursor is looked up without the thread: another thread's item is accepted.
    "test_unknown_cursor": "a cursor from another thread is accepted",
    # The stateful test finds one of the above first.
    "test_stateful_matches_the_reference_model": "finds one of the bugs above",
}
"""The real bugs of openai-chatkit's test store, as the command's expected_failures."""


def test_chatkit_mock_store_fails_only_on_its_real_bugs(tmp_path: Path) -> None:
    """openai-chatkit's own test store: every failure is one of its real bugs, and says so."""
    source = os.environ.get(MOCK_STORE_ENV)
    if not source:
        pytest.skip(
            f"set {MOCK_STORE_ENV} to a copy of tests/helpers/mock_store.py of "
            "openai/chatkit-python (it is not in the sdist)"
        )
    helpers = tmp_path / "tests" / "helpers"
    helpers.mkdir(parents=True)
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "_types.py").write_text((HERE / "upstream" / "_types.py").read_text())
    (helpers / "__init__.py").write_text("")
    (helpers / "mock_widget.py").write_text(  # a stand-in: the store only stores it
        "from pydantic import BaseModel\n\n\nclass SampleWidget(BaseModel):\n    id: str\n"
    )
    (helpers / "mock_store.py").write_text(Path(source).read_text())
    module = MOCK_CONFORMANCE + f"\nexpected_failures = {MOCK_REAL_BUGS!r}\n"
    (tmp_path / "mock_conformance.py").write_text(module)
    junit = tmp_path / "report.xml"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    result = subprocess.run(
        [*CONFORMANCE, "mock_conformance:make_store", "-q", "-rxX", f"--junitxml={junit}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    xfailed = result.stdout.count("XFAIL")
    assert xfailed == len(MOCK_REAL_BUGS), result.stdout[-6000:]
