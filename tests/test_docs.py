"""The examples of the README and of the documentation pages run as written.

Every ```python block runs; ```sh blocks and plain ``` blocks do not. A
file's blocks run in order in one namespace, as a reader pastes them one
after another, so each file must import what it uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def run_blocks(path: Path) -> None:
    namespace: dict = {}
    exec(compile("\n".join(python_blocks(path)), str(path), "exec"), namespace)  # one session, as a reader runs them


def test_readme_python_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(python_blocks(README)) >= 4
    run_blocks(README)
    out = capsys.readouterr().out
    assert "obs['inv']['items']: expected shape (4,), got (3,)" in out


@pytest.mark.parametrize("page", [page for page in PAGES if python_blocks(page)], ids=lambda page: page.name)
def test_docs_python_examples_run(page: Path) -> None:
    run_blocks(page)


def test_docs_pages_have_examples() -> None:
    # The pages whose examples moved out of the README: a page whose blocks
    # stopped matching (a typo in the fence) would otherwise pass unseen.
    with_blocks = {page.name for page in PAGES if python_blocks(page)}
    assert {"adapters.md", "policies.md", "rows.md", "training.md", "vector.md"} <= with_blocks
