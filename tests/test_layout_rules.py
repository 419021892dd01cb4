"""The remote-code layout rule (DESIGN.md): files that travel to the Hub import only their own
folder, as `from .x import y`, plus installed third-party packages; names never collide."""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = {"modeling_medvl", "processing", "train", "hub_cards"}
# The processor's entry files; everything they import relatively travels with them.
PROCESSOR_ENTRY_FILES = ["image_processing_medvl.py", "processing_medvl.py"]
SHADOWING_NAMES = {"datasets", "evaluate", "accelerate", "peft", "timm", "transformers", "tokenizers", "torch"}


def imports_of(path: Path):
    return [node for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def layout_violations(path: Path):
    problems = []
    for node in imports_of(path):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1 or node.module is None or "." in node.module:
                problems.append(f"{path.name}:{node.lineno}: only `from .module import name` is followed by remote code")
            elif not (path.parent / f"{node.module}.py").is_file():
                problems.append(f"{path.name}:{node.lineno}: .{node.module} is not a file beside it")
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
        for name in names:
            if name.split(".")[0] in PROJECT_PACKAGES:
                problems.append(f"{path.name}:{node.lineno}: imports project package {name!r}")
    return problems


def travelling_processor_files():
    folder = REPO_ROOT / "processing"
    pending = [folder / name for name in PROCESSOR_ENTRY_FILES if (folder / name).is_file()]
    seen = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in imports_of(path):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                target = folder / f"{node.module}.py"
                if target.is_file():
                    pending.append(target)
    return sorted(seen)


def modeling_files():
    return sorted((REPO_ROOT / "modeling_medvl").glob("*.py"))


def test_rule_checker_catches_violations(tmp_path):
    bad = tmp_path / "bad_medvl.py"
    bad.write_text("from ..processing import x\nfrom .sub.mod import y\nimport processing\nfrom .missing import z\n")
    problems = layout_violations(bad)
    assert len(problems) == 4, problems


@pytest.mark.parametrize("path", modeling_files() + travelling_processor_files(), ids=lambda p: p.name)
def test_travelling_file_imports_only_its_folder(path):
    assert layout_violations(path) == []


def test_travelling_file_names_are_unique():
    modeling = {p.name for p in modeling_files()} - {"__init__.py"}
    processor = {p.name for p in travelling_processor_files()}
    assert modeling.isdisjoint(processor), modeling & processor


def test_no_train_script_shadows_a_package():
    assert not {p.stem for p in (REPO_ROOT / "train").glob("*.py")} & SHADOWING_NAMES


def test_third_party_imports_are_installed_packages():
    stdlib = set(sys.stdlib_module_names)
    for path in modeling_files() + travelling_processor_files():
        for node in imports_of(path):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in PROJECT_PACKAGES:
                    continue
                assert importlib.util.find_spec(top) is not None, f"{path.name}: {name}"
