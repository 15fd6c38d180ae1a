"""Packaging: public names, cheap imports, a pytest plugin that loads only when asked."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path

import chatkit_stores


def test_public_names_import() -> None:
    for name in chatkit_stores.__all__:
        assert getattr(chatkit_stores, name) is not None
    assert set(chatkit_stores.__all__) <= set(dir(chatkit_stores))


def test_plugin_is_opt_in() -> None:
    """No pytest11 entry point: the plugin loads only in projects that ask for it."""
    plugins = [ep.value for ep in entry_points(group="pytest11")]
    assert not [p for p in plugins if p.startswith("chatkit_stores")], plugins


def imported(module: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has imported after importing ``module``."""
    code = f"import sys, {module}; print(*sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_testing_names_import() -> None:
    from chatkit_stores import testing

    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert set(testing.__all__) <= set(dir(testing))


def test_testing_import_is_light() -> None:
    """The suite imports ``chatkit.server`` when a server test runs, and never the demo."""
    heavy = ("chatkit.server", "chatkit_stores.demo")
    assert imported("chatkit_stores.testing", heavy) == []


ROOT = Path(__file__).parent.parent
INSTALL_DOCS = (ROOT / "README.md", ROOT / "docs" / "quickstart.md")


def shell_lines(markdown: str) -> list[str]:
    """The lines of the ```bash blocks of a Markdown text."""
    return [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)
        for line in block.splitlines()
    ]


def test_install_docs_work_before_the_package_is_published() -> None:
    """No command installs from the package index; the wheel named is this version's."""
    wheel = f"dist/chatkit_stores-{version('chatkit-stores')}-py3-none-any.whl"
    for doc in INSTALL_DOCS:
        lines = shell_lines(doc.read_text())
        assert any(wheel in line for line in lines), f"{doc.name} does not name {wheel}"
        from_index = [line for line in lines if re.search(r"pip install '?chatkit-stores", line)]
        assert from_index == [], f"{doc.name}: {from_index}"
