"""The shape a newcomer relies on: no import cycle between the project's modules (lazy imports inside functions
count too), and the trainer's expected failures under one root that the CLI prints as one line."""
import ast
from pathlib import Path

import pytest

from conftest import needs_torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emotion", "webapp", "trainer", "model_card")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, project: set[str]) -> set[str]:
    """Project modules `path` imports, at any depth of its code (a function-level import is still an edge)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        found |= {t for t in targets if t in project}
    return found - {name}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "app.py"]
    project = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, project) for p in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_the_projects_modules():
    assert find_cycle(graph()) is None


def test_the_inference_core_imports_neither_the_web_app_nor_the_trainer():
    upward = {m: sorted(t for t in ts if t.split(".")[0] in ("webapp", "trainer", "app"))
              for m, ts in graph().items() if m.startswith("emotion")}
    assert not any(upward.values()), upward


def test_every_trainer_error_is_a_trainer_error_and_an_emotion_error():
    from emotion.errors import EmotionError
    from trainer import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and c.__module__ == errors.__name__]
    assert len(classes) >= 5
    assert all(issubclass(c, errors.TrainerError) and issubclass(c, EmotionError) for c in classes)


@needs_torch
def test_the_cli_prints_an_expected_error_in_one_line_and_keeps_the_trace_of_a_bug(monkeypatch, capsys):
    import trainer.__main__ as cli
    from trainer.errors import DataError

    def fail(args):
        raise DataError("no split 'x' in data; it has train")

    monkeypatch.setattr(cli, "_dispatch", fail)
    assert cli.main(["evaluate", "--model", "small_cnn"]) == 2
    assert capsys.readouterr().err.strip() == "error: no split 'x' in data; it has train"

    def bug(args):
        raise RuntimeError("a torch bug")

    monkeypatch.setattr(cli, "_dispatch", bug)
    with pytest.raises(RuntimeError, match="a torch bug"):
        cli.main(["evaluate", "--model", "small_cnn"])


def test_no_function_is_over_60_lines():
    """Small functions (STYLE.md): a newcomer reads one on a screen. Tests, benches and tools included."""
    long = []
    for path in [ROOT / "app.py", *(p for d in (*PACKAGES, "bench", "tools", "tests") for p in (ROOT / d).rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, long
