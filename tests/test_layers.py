"""The layering is a contract: the core imports nothing else from lfcore, and the math imports neither the model
stack nor the report machinery (import-linter, contracts in pyproject.toml)."""
import ast
from pathlib import Path

from importlinter import cli

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == cli.EXIT_STATUS_SUCCESS


def test_lfcore_imports_itself_relatively():
    """``cache.code_key`` follows relative imports only: an absolute ``import lfcore.x`` would hide a dependency."""
    for path in (ROOT / "lfcore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] == "lfcore" for n in names), f"{path}: {ast.unparse(node)}"
