"""The hand-written stubs in _native.pyi match the built extension."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pufferrs
from pufferrs import _native

STUBS = Path(pufferrs.__file__).with_name("_native.pyi")


def stub_names() -> dict[str, set[str]]:
    tree = ast.parse(STUBS.read_text())
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            members = set()
            for n in node.body:
                if isinstance(n, ast.FunctionDef):
                    members.add(n.name)
                elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                    members.add(n.target.id)
                elif isinstance(n, ast.Assign):
                    members.update(t.id for t in n.targets if isinstance(t, ast.Name))
            names[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            names[node.name] = set()
    return names


def runtime_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for name, value in vars(_native).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(value):
            own = {m for m in vars(value) if not m.startswith("_") or m in ("__new__", "__eq__")}
            names[name] = own
        elif callable(value):
            names[name] = set()
    return names


def test_stubs_list_exactly_what_the_extension_has() -> None:
    assert stub_names() == runtime_names()
