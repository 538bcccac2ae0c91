"""The layer table: every module imports only layers at or below its own, and no import circle exists.

Imports are read from the source (AST), including those inside functions and under TYPE_CHECKING, so a
lazy or typing-only import cannot hide a dependency that points the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layer of each module (a package name covers its submodules). See ../shared/DESIGN.md "Target layout".
LAYERS = {
    # L0 foundation
    "embedstore._version": 0,
    "embedstore._malloc": 0,
    "embedstore.errors": 0,
    "embedstore.schema": 0,
    "embedstore.ids": 0,
    "embedstore.validation": 0,
    "embedstore.tabular": 0,
    "embedstore.hooks": 0,
    "embedstore.location": 0,
    "embedstore._moved": 0,
    # L1 the store directory: tables, versions, keyed writes, the embedding-table format
    "embedstore.catalog": 1,
    "embedstore.versions": 1,
    "embedstore.writes": 1,
    "embedstore.damage": 1,
    "embedstore.embedding_tables": 1,
    "embedstore.saved": 1,
    # L2 pixel primitives, backbones, where models run
    "embedstore.sources": 2,
    "embedstore.backbones": 2,
    "embedstore.runtime": 2,
    "embedstore.ray_cluster": 2,
    # L3 verbs, each taking a catalog
    "embedstore.labels": 3,
    "embedstore.label_options": 3,
    "embedstore.info": 3,
    "embedstore.check": 3,
    "embedstore.upgrade": 3,
    "embedstore.embeddings": 3,
    "embedstore.ingest": 3,
    "embedstore.embed": 3,
    # L4 tasks over stored embeddings; evaluate sits below the others (BELOW)
    "embedstore.evaluate": 4,
    "embedstore.search": 4,
    "embedstore.probe": 4,
    "embedstore.samples": 0,
    # L5 the façade
    "embedstore.store": 5,
    "embedstore.demo": 5,
    "embedstore": 5,
}
# Siblings of one layer that must not reach into each other.
SEPARATE = [("embedstore.ingest", "embedstore.embed"), ("embedstore.probe", "embedstore.search")]
# Within a layer or across packages: (module, what it must not import). Shared evaluation sits below probe,
# search and heads, which use it rather than each other.
BELOW = [
    ("embedstore.evaluate", "embedstore.probe"),
    ("embedstore.evaluate", "embedstore.search"),
    ("heads", "embedstore.probe"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("embedstore").rglob("*.py"), *ROOT.joinpath("heads").rglob("*.py")]
    files += ROOT.joinpath("cli").rglob("*.py")
    return {module_name(path): path for path in files}


MODULES = project_modules()


def imported(name: str, path: Path) -> set[str]:
    """Project modules that `name` imports anywhere in its source (functions and TYPE_CHECKING included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES)
    return found - {name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def layer_of(name: str) -> int | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def test_every_embedstore_module_has_a_layer():
    unplaced = [m for m in MODULES if m.startswith("embedstore") and layer_of(m) is None]
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{name} (L{layer_of(name)}) imports {target} (L{layer_of(target)})"
        for name, targets in GRAPH.items()
        if name.startswith("embedstore")
        for target in targets
        if target.startswith("embedstore") and layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_separate_siblings_do_not_import_each_other():
    crossing = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        for a, b in SEPARATE
        if (name.startswith(a) and target.startswith(b)) or (name.startswith(b) and target.startswith(a))
    ]
    assert not crossing, "\n".join(crossing)


def test_shared_evaluation_sits_below_probe_search_and_heads():
    """evaluate imports neither probe nor search; heads takes folds and scores from evaluate, not probe; probe
    and search do not import each other (SEPARATE)."""
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        for low, high in BELOW
        if _within(name, low) and _within(target, high)
    ]
    assert not wrong, "\n".join(wrong)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_embedstore_never_imports_cli_or_heads_and_heads_uses_the_public_api():
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if (name.startswith("embedstore") and target.split(".")[0] in ("cli", "heads"))
        or (name.startswith("heads") and target.startswith("embedstore.") and target.count(".") > 1)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    """Tarjan's strongly connected components over the whole import graph: every one is a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..errors import SourceError", {"embedstore.errors"}),
        ("from .. import hooks", {"embedstore.hooks"}),
        ("from .options import EmbedOptions", {"embedstore.embed.options"}),
        ("import embedstore.catalog", {"embedstore.catalog"}),
        ("if TYPE_CHECKING:\n    from ..store import Store", {"embedstore.store"}),
        ("def f():\n    from ..check import check_store", {"embedstore.check"}),
    ],
)
def test_the_walker_sees_relative_lazy_and_typing_only_imports(tmp_path, source, expected):
    """The walker itself: a layer test that could not see an import would prove nothing."""
    module = tmp_path / "local.py"
    module.write_text(source + "\n")
    assert imported("embedstore.embed.local", module) == expected
