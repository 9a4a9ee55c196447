"""The data flows one way: zoo -> quantize -> export_mobile -> measure -> zoo_cli (the `zoo` command).

Every import in those packages (module level or inside a function, plus ``importlib.import_module``
with a literal name) may name its own package or an earlier one, never a later one. The check reads
the source with :mod:`ast`, so it also sees the imports that a lazy, function-level import hides
from an import-time check."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The packages in flow order: each may import only itself and those before it.
FLOW = ("zoo", "quantize", "export_mobile", "measure", "zoo_cli")
#: (file, imported package) -> why this backward import is allowed. Keep it short and justified.
EXCEPTIONS = {
    ("zoo/__main__.py", "zoo_cli"): "`python -m zoo` (torchrun, older scripts) is a script entry point that only "
                                    "hands over to the zoo command; no code imports zoo.__main__ (checked below)",
}


def _imported_modules(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, relative ones resolved."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def _flow_files():
    for package in FLOW:
        yield from sorted((REPO / package).rglob("*.py"))


def _backward_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, imported module, imported package) for each import that goes up the flow."""
    rank = {name: i for i, name in enumerate(FLOW)}
    found = []
    for path in _flow_files():
        relative = path.relative_to(REPO).as_posix()
        own = rank[relative.split("/")[0]]
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"), relative), path):
            top = module.split(".")[0]
            if top in rank and rank[top] > own:
                found.append((relative, line, module, top))
    return found


def test_imports_follow_the_flow():
    violations = [f"{file}:{line} imports {module} ({FLOW[FLOW.index(file.split('/')[0])]} comes before {top})"
                  for file, line, module, top in _backward_imports() if (file, top) not in EXCEPTIONS]
    assert not violations, ("imports that go back up the flow " + " -> ".join(FLOW) + ":\n  "
                            + "\n  ".join(violations)
                            + "\nmove the code to the later package or pass the value in from there")


def test_every_exception_is_still_needed():
    used = {(file, top) for file, _line, _module, top in _backward_imports()}
    stale = sorted(set(EXCEPTIONS) - used)
    assert not stale, f"EXCEPTIONS lists imports that no longer exist, remove them: {stale}"


def test_nothing_imports_the_python_dash_m_alias():
    """The exception above holds only while zoo/__main__.py stays a script that nothing imports."""
    importers = [f"{path.relative_to(REPO)}:{line}" for path in [*_flow_files(), *sorted((REPO / "tests").glob("*.py"))]
                 for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8")), path)
                 if module == "zoo.__main__"]
    assert not importers, f"zoo.__main__ is an entry point, not a module to import: {importers}"


@pytest.mark.parametrize("package", FLOW[:-1])
def test_commands_hand_over_within_the_flow(package):
    """A passthrough names its module as a string (imported when it runs), which the import check
    above cannot see: it too must be the declaring package or an earlier one."""
    import importlib

    commands = importlib.import_module(f"{package}.commands").COMMANDS
    later = [f"{command.name} -> {command.main}" for command in commands
             if command.main and FLOW.index(command.main.split(".")[0]) > FLOW.index(package)]
    assert not later, f"{package}/commands.py hands over to a later package: {later}"
    for command in commands:
        if command.main:
            assert callable(command.main_function()), command.main


@pytest.mark.parametrize("source, expected", [
    ("import measure.bench\n", ["measure.bench"]),
    ("def f():\n    from export_mobile.api import export_model\n", ["export_mobile.api"]),
    ("import importlib\nimportlib.import_module('zoo_cli.main')\n", ["importlib", "zoo_cli.main"]),
    ("from . import results\nfrom .measured import fmt\n", ["measure", "measure.measured"]),
])
def test_the_checker_sees_every_kind_of_import(source, expected):
    """Function-level, importlib and relative imports are all found (else the test above could pass
    while a backward import hides in a function)."""
    found = [module for _line, module in _imported_modules(ast.parse(source), REPO / "measure" / "check.py")]
    assert found == expected
