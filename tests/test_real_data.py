"""The real-data tests skip cleanly, per resource, when ../shared holds the weights only, or nothing.

They cannot run here without ../shared; what can be checked everywhere is their skip conditions: the
helper they use, and that every test marked `real_data` guards each shared resource it reads.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared_data import FLOWERS, MOBILENET, missing, needs, skip_reason

TESTS = Path(__file__).resolve().parent
# The names test files give the paths under ../shared.
RESOURCES = {"SHARED", "FLOWERS", "MOBILENET", "IMAGENET_LABELS", "SHARED_WEIGHTS"}


def layout(root: Path, *, weights: bool, datasets: bool) -> tuple[Path, Path]:
    """A ../shared folder with the weights, the datasets, both or neither: (weights file, dataset folder)."""
    weights_file = root / "weights" / "mobilenetv2_100.tf_in1k.safetensors"
    flowers = root / "datasets" / "flowers17"
    if weights:
        weights_file.parent.mkdir(parents=True)
        weights_file.write_bytes(b"weights")
    if datasets:
        (flowers / "Daisy").mkdir(parents=True)
        (flowers / "Daisy" / "image_0001.jpg").write_bytes(b"jpeg")
    return weights_file, flowers


def skip_of(mark: pytest.MarkDecorator) -> tuple[bool, str]:
    assert mark.name == "skipif"
    return bool(mark.args[0]), mark.kwargs["reason"]


def test_weights_without_datasets_skip_and_name_the_dataset(tmp_path: Path) -> None:
    weights, flowers = layout(tmp_path, weights=True, datasets=False)
    skipped, reason = skip_of(needs(weights, flowers))
    assert skipped and str(flowers) in reason and str(weights) not in reason
    assert not skip_of(needs(weights))[0]  # a test of the weights alone still runs


def test_neither_skips_and_names_both(tmp_path: Path) -> None:
    weights, flowers = layout(tmp_path, weights=False, datasets=False)
    skipped, reason = skip_of(needs(weights, flowers))
    assert skipped and reason == f"needs {weights} and {flowers} (not found)"


def test_both_run(tmp_path: Path) -> None:
    weights, flowers = layout(tmp_path, weights=True, datasets=True)
    assert skip_of(needs(weights, flowers)) == (False, "")


def test_an_empty_dataset_folder_counts_as_missing(tmp_path: Path) -> None:
    _, flowers = layout(tmp_path, weights=False, datasets=False)
    flowers.mkdir(parents=True)
    assert missing(flowers) == [flowers]


def test_shared_paths_are_shown_as_the_user_would_find_them() -> None:
    assert skip_reason([FLOWERS, MOBILENET]) == (
        "needs ../shared/datasets/flowers17 and ../shared/weights/mobilenetv2_100.tf_in1k.safetensors (not found)"
    )


# --- every real-data test guards what it reads ----------------------------------------------------


def _is_real_data_mark(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "real_data"


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _skip_condition(node: ast.expr, assigned: dict[str, ast.expr]) -> ast.expr | None:
    """The decorator as a skip condition (`needs(...)`, `pytest.mark.skipif(...)`, or a name bound to
    one of those at module level), else None."""
    if isinstance(node, ast.Name) and node.id in assigned:
        node = assigned[node.id]
    if isinstance(node, ast.Call):
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "needs") or (
            isinstance(func, ast.Attribute) and func.attr == "skipif"
        ):
            return node
    return None


def real_data_tests() -> list[tuple[str, ast.FunctionDef, list[ast.expr]]]:
    """(file, test function, its skip conditions) for every test marked real_data under tests/."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = {
            t.id: stmt.value
            for stmt in tree.body
            if isinstance(stmt, ast.Assign)
            for t in stmt.targets
            if isinstance(t, ast.Name)
        }
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and any(_is_real_data_mark(d) for d in fn.decorator_list):
                skips = [s for d in fn.decorator_list if (s := _skip_condition(d, assigned)) is not None]
                found.append((path.name, fn, skips))
    return found


def test_there_are_real_data_tests() -> None:
    files = {name for name, _, _ in real_data_tests()}
    assert {"test_backbones.py", "test_builtin.py", "test_train_features.py"} <= files


def test_every_real_data_test_skips_unless_each_resource_it_reads_is_there() -> None:
    problems = []
    for name, fn, skips in real_data_tests():
        read = _names(ast.Module(body=fn.body, type_ignores=[])) & RESOURCES
        guarded = set().union(*(_names(s) for s in skips)) & RESOURCES
        if not skips:
            problems.append(f"{name}::{fn.name} has no skip condition")
        elif read - guarded:
            problems.append(f"{name}::{fn.name} reads {sorted(read - guarded)} without a skip for it")
        for s in skips:  # one condition over several resources must say which one is missing
            if len(_names(s) & RESOURCES) > 1 and not (isinstance(s.func, ast.Name) and s.func.id == "needs"):  # type: ignore[attr-defined]
                problems.append(f"{name}::{fn.name} skips for several resources with one reason: use needs(...)")
    assert not problems, "\n".join(problems)


# --- the real-data tests themselves, against a ../shared with the weights only, or with nothing ---

REAL_DATA_FILES = ("test_backbones.py", "test_builtin.py", "test_train_features.py")


def run_real_data_tests(tmp_path: Path, *, weights: bool) -> subprocess.CompletedProcess[str]:
    """Run the real-data tests from a copy of the tests whose ../shared is a folder of our making."""
    main = tmp_path / "work" / "main"
    (main / "tests").mkdir(parents=True)
    shutil.copy(TESTS.parent / "pyproject.toml", main)
    for name in ("conftest.py", "shared_data.py", *REAL_DATA_FILES):
        shutil.copy(TESTS / name, main / "tests" / name)
    shared = tmp_path / "work" / "shared"
    shared.mkdir()
    if weights:
        (shared / "weights").symlink_to(MOBILENET.parent, target_is_directory=True)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "real_data", "-p", "no:cacheprovider", "tests"],
        cwd=main, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.skipif(not MOBILENET.is_file(), reason="needs the shared weights to copy the weights-only layout")
def test_with_the_weights_only_the_dataset_tests_skip_and_the_weights_tests_run(tmp_path: Path) -> None:
    res = run_real_data_tests(tmp_path, weights=True)
    assert res.returncode == 0, res.stdout + res.stderr
    skipped = [line for line in res.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 2, res.stdout  # the two flowers tests
    assert all("needs ../shared/datasets/flowers17 (not found)" in line for line in skipped), skipped
    assert " passed" in res.stdout and "error" not in res.stdout


def test_with_nothing_shared_every_real_data_test_skips(tmp_path: Path) -> None:
    res = run_real_data_tests(tmp_path, weights=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passed" not in res.stdout and "error" not in res.stdout and "failed" not in res.stdout
    assert "skipped" in res.stdout.splitlines()[-1], res.stdout
