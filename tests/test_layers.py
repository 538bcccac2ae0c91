"""The layer table: every module imports only layers at or below its own, and no import circle exists.

Imports are read from the source (AST), including those inside functions and under TYPE_CHECKING, so a
lazy or typing-only import cannot hide a dependency that points the wrong way.

One door to embedding tables: only `embedstore.embeddings` (EmbeddingQuery, EmbeddingTable), the embed verb
that writes them and the store's maintenance (DOOR_EXEMPT) open an `emb__` table. A module *opens* an
embedding table when, in the AST,
  - it calls `<x>.dataset(t, ...)`, `<x>.read(t, ...)` or `<x>.count(t)` (the catalog's table readers) where
    `t` names an embedding table: a call of `table_name(...)` or `require_embeddings(...)`, a string or
    f-string starting with `emb__` or built with `EMBEDDING_PREFIX`, an attribute `.table` (what queries,
    index manifests and head cards call their embedding table), or a local name bound to one of these (by
    assignment, or as the loop variable over `embedding_table_names()`) in the same function; or
  - it reads provenance from a table's schema itself: a call of `recorded_provenance(...)` or
    `Provenance.from_metadata(...)`.
A table name that arrives as a plain parameter is not traced (the rule reads one function at a time).

heads and cli use embedstore's public API: each import of embedstore names a module listed in PUBLIC, and
no module or name starting with `_`.

One sorted-id lookup: `np.searchsorted` is called only in `embedstore/core/ids.py` (`IdLookup`), except at the
listed places that search arrays other than ids (SEARCHSORTED_ELSEWHERE).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layer of each package (a package name covers its submodules): the folders are the layers, as in the
# README's "Layout" and ../shared/DESIGN.md "Target layout".
LAYERS = {
    # L0 foundation (and the data that ships inside embedstore)
    "embedstore._version": 0,
    "embedstore.core": 0,
    "embedstore.samples": 0,
    # L1 the store directory: tables, versions, keyed writes, the embedding-table format
    "embedstore.storage": 1,
    # L2 pixel primitives, backbones, where models run
    "embedstore.sources": 2,
    "embedstore.backbones": 2,
    "embedstore.runtime": 2,
    # L3 the door to embedding tables, the verbs that fill a store, its maintenance
    "embedstore.embeddings": 3,
    "embedstore.ingest": 3,
    "embedstore.embed": 3,
    "embedstore.maintenance": 3,
    # L4 tasks over stored embeddings; evaluate sits below the others (BELOW)
    "embedstore.evaluate": 4,
    "embedstore.search": 4,
    "embedstore.probe": 4,
    # L5 the façade
    "embedstore.store": 5,
    "embedstore.demo": 5,
    "embedstore": 5,
}
# What embedstore/ holds at its top: the layer packages, and the façade's few files.
TOP_LEVEL_FILES = {"__init__.py", "_version.py", "store.py", "demo.py"}
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


def test_the_folders_are_the_layers():
    """embedstore/ holds the layer packages and the façade only: every package is in LAYERS (a layer of its
    own), and no module sits at the top but the façade's."""
    top = ROOT / "embedstore"
    files = {p.name for p in top.glob("*.py")}
    assert files == TOP_LEVEL_FILES, (
        f"modules at embedstore/'s top belong in a layer package: {files - TOP_LEVEL_FILES}"
    )
    packages = {p.name for p in top.iterdir() if (p / "__init__.py").exists()}
    assert {f"embedstore.{p}" for p in packages} == {name for name in LAYERS if name.count(".") == 1} - {
        f"embedstore.{f[:-3]}" for f in TOP_LEVEL_FILES
    }


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


def test_embedstore_never_imports_cli_or_heads():
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if name.startswith("embedstore") and target.split(".")[0] in ("cli", "heads")
    ]
    assert not wrong, "\n".join(wrong)


# -- heads and cli use embedstore's public API --------------------------------------------------------------

# The embedstore modules heads and cli may import, each by its full name (a package's submodules are not
# public because the package is: `embedstore.search`, not `embedstore.search.indexes`). To reach something
# deeper, export it from its package (as `embedstore.sources` exports `GridSettings`) or add the module here
# saying why. No module or name that starts with `_` is ever public (`embedstore.__version__`, a dunder, is).
PUBLIC = {
    "embedstore": "Store, open, init, the options and reports, __version__",
    "embedstore.core.errors": "the errors, and their one-line wording",
    "embedstore.storage.catalog": "Catalog, catalog_of: the store's tables (`store.catalog`)",
    "embedstore.core.schema": "the core tables' names and columns",
    "embedstore.core.validation": "names, values and output files checked with one message format",
    "embedstore.core.location": "paths on local disk or object storage, exclusive locks",
    "embedstore.core.reports": "the JSON report every result writes",
    "embedstore.runtime": "the memory this machine has",
    "embedstore.core.ids": "sorted-id lookups",
    "embedstore.embeddings": "the one door to stored vectors (EmbeddingQuery, EmbeddingTable)",
    "embedstore.storage.embedding_tables": "an embedding table's name",
    "embedstore.storage.saved": "where heads are saved, read by `embedstore info` too",
    "embedstore.evaluate": "the folds and scores heads share with probe",
    "embedstore.sources": "slides, tissue and tile grids",
    "embedstore.backbones": "the backbone listing",
    "embedstore.embed": "EmbedOptions and check_backbones (fail fast before embedding)",
    "embedstore.search": "IndexOptions, SearchOptions (the cli builds its flags from them)",
    "embedstore.maintenance.info": "the info listing's text",
    "embedstore.maintenance.tile_listing": "the tiles listing's text (the tiles command)",
    "embedstore.maintenance.upgrade": "the format upgrade",
    "embedstore.demo": "the demo the heads demo continues",
    "embedstore.core.moved": "old import paths kept for one release (heads.data, heads.demo)",
    "embedstore.core.lazy": "names a package imports on first use (heads' own lazy names)",
}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def public_api_breaches(source: str) -> list[str]:
    """Where `source` (a module of heads or cli) imports embedstore other than through PUBLIC: an import of
    a module not listed, or of a module or name starting with `_`, or an attribute `embedstore._x`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            used = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` a name of mod
            used = [
                (f"{base}.{a.name}", None) if f"{base}.{a.name}" in MODULES else (base, a.name)
                for a in node.names
            ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "embedstore"
        ):
            used = [("embedstore", node.attr)]
        else:
            continue
        for module, name in used:
            if module.split(".")[0] != "embedstore":
                continue
            if module not in PUBLIC or any(_private(p) for p in module.split(".")):
                found.append(f"line {node.lineno}: module {module}")
            elif name is not None and _private(name):
                found.append(f"line {node.lineno}: {module}.{name}")
    return found


def test_heads_and_cli_import_only_public_embedstore_modules_and_names():
    breaches = [
        f"{name} {where}"
        for name, path in MODULES.items()
        if name.split(".")[0] in ("heads", "cli")
        for where in public_api_breaches(path.read_text())
    ]
    assert not breaches, "heads and cli use embedstore's public modules (PUBLIC) only:\n" + "\n".join(
        breaches
    )


def test_every_public_module_exists():
    """PUBLIC stays honest: each entry names a module of embedstore."""
    assert not [name for name in PUBLIC if name not in MODULES]


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("from embedstore.storage.catalog import Catalog", 0),
        ("from embedstore import Store, __version__", 0),
        ("from embedstore.storage import saved", 0),
        ("import embedstore\nembedstore.open('s')", 0),
        ("from os import path", 0),
        ("from embedstore._version import __version__", 1),
        ("from embedstore.core.errors import _hidden", 1),
        ("from embedstore.search.indexes import build_index", 1),
        ("import embedstore.search.indexes", 1),
        ("from embedstore.search import indexes", 1),
        ("import embedstore\nembedstore._version", 1),
        ("def f():\n    from embedstore.embed.local import embed", 1),
    ],
)
def test_the_public_api_rule_sees_private_and_deep_imports(source, count):
    """The rule itself: what heads and cli may import from embedstore, and what they may not."""
    assert len(public_api_breaches(source)) == count


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
        ("from ..core.errors import SourceError", {"embedstore.core.errors"}),
        ("from ..core import hooks", {"embedstore.core.hooks"}),
        ("from .options import EmbedOptions", {"embedstore.embed.options"}),
        ("import embedstore.storage.catalog", {"embedstore.storage.catalog"}),
        ("if TYPE_CHECKING:\n    from ..store import Store", {"embedstore.store"}),
        ("def f():\n    from ..maintenance.check import check_store", {"embedstore.maintenance.check"}),
    ],
)
def test_the_walker_sees_relative_lazy_and_typing_only_imports(tmp_path, source, expected):
    """The walker itself: a layer test that could not see an import would prove nothing."""
    module = tmp_path / "local.py"
    module.write_text(source + "\n")
    assert imported("embedstore.embed.local", module) == expected


# -- the one door to embedding tables ---------------------------------------------------------------------

DOOR = "embedstore.embeddings.query"
DOOR_EXEMPT = {
    DOOR: "the door",
    "embedstore.storage.embedding_tables": "the embedding-table format (names, schema, provenance record)",
    "embedstore.storage.catalog": "the catalog's table readers themselves",
    "embedstore.storage.keyed_writes": "keyed writes",
    "embedstore.embed.writer": "writes vectors",
    "embedstore.embed.plan": "the embed verb: which rows exist, the provenance to check and record",
    "embedstore.embed.local": "the embed verb: reports the version it wrote",
    "embedstore.embed.ray_engine": "the embed verb: reports the version it wrote",
    "embedstore.maintenance.check": "store maintenance",
    "embedstore.storage.damage": "store maintenance",
    "embedstore.storage.versions": "store maintenance",
    "embedstore.maintenance.info": "store maintenance",
    "embedstore.maintenance.upgrade": "store maintenance",
}
TABLE_READERS = ("dataset", "read", "count")
NAMING_CALLS = ("table_name", "require_embeddings")
PROVENANCE_READS = ("recorded_provenance", "from_metadata")


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return (
            func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        )
    return None


def _names_embedding_table(node: ast.AST, bound: set[str]) -> bool:
    if _called(node) in NAMING_CALLS:
        return True
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("emb__"):
        return True
    if isinstance(node, ast.JoinedStr | ast.BinOp):
        parts = list(ast.walk(node))
        if any(isinstance(p, ast.Name) and p.id == "EMBEDDING_PREFIX" for p in parts):
            return True
        first = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else None
        return isinstance(first, ast.Constant) and str(first.value).startswith("emb__")
    if isinstance(node, ast.Attribute) and node.attr == "table":
        return True
    return isinstance(node, ast.Name) and node.id in bound


def _bound_names(function: ast.AST) -> set[str]:
    """Local names bound to an embedding table's name in `function` (to a fixed point)."""
    bound: set[str] = set()
    while True:
        before = len(bound)
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and _names_embedding_table(node.value, bound):
                bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
            loop = isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name)
            if loop and _called(node.iter) == "embedding_table_names":
                bound.add(node.target.id)
        if len(bound) == before:
            return bound


def embedding_table_opens(source: str) -> list[str]:
    """Where `source` opens an embedding table directly (see the module docstring): 'line: call'."""
    tree = ast.parse(source)
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    found = set()
    for scope in [tree, *scopes]:
        bound = _bound_names(scope) if scope is not tree else set()
        for node in ast.walk(scope):
            name = _called(node)
            if name in PROVENANCE_READS:
                found.add(f"{node.lineno}: {name}(...)")
            elif name in TABLE_READERS and node.args and isinstance(node.func, ast.Attribute):
                if not _names_embedding_table(node.args[0], bound):
                    continue
                found.add(f"{node.lineno}: .{name}({ast.unparse(node.args[0])})")
    return sorted(found, key=lambda s: int(s.split(":")[0]))


def test_only_the_door_opens_embedding_tables():
    opened = [
        f"{name} line {where}"
        for name, path in MODULES.items()
        if name not in DOOR_EXEMPT
        for where in embedding_table_opens(path.read_text())
    ]
    assert not opened, "read embedding tables through embedstore.embeddings (EmbeddingTable):\n" + "\n".join(
        opened
    )


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("catalog.dataset(table_name(key))", 1),
        ("def f(store):\n    table = require_embeddings(store, b)\n    store.dataset(table).schema", 1),
        ("query.catalog.dataset(query.table, query.version)", 1),
        ("store.read(f'emb__{key}', columns=['tile_id'])", 1),
        ("def f(c):\n    for n in c.embedding_table_names():\n        c.dataset(n)", 1),
        ("recorded_provenance(dataset.schema, name)", 1),
        ("Provenance.from_metadata(schema.metadata)", 1),
        ("catalog.dataset(TILES)\ncatalog.read(LABELS, columns=['tile_id'])", 0),
        ("EmbeddingTable.of(catalog, key).provenance", 0),
    ],
)
def test_the_door_rule_sees_direct_opens(source, count):
    """The rule itself: what counts as opening an embedding table, and what does not."""
    assert len(embedding_table_opens(source)) == count


# -- one sorted-id lookup -----------------------------------------------------------------------------------

SEARCHSORTED_ELSEWHERE = {
    "embedstore.search.searcher": "slide codes (the hits per slide), not ids",
    "embedstore.storage.keyed_writes": "64-bit hashes of table keys (the writers' key sets), not ids",
}


def test_one_sorted_id_lookup():
    """`np.searchsorted` over ids lives in `embedstore.core.ids.IdLookup` only; every other lookup uses it."""
    searching = []
    for name, path in MODULES.items():
        calls = [
            n.lineno
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and _called(n) == "searchsorted"
        ]
        if calls and name not in ("embedstore.core.ids", *SEARCHSORTED_ELSEWHERE):
            searching.append(f"{name} line {calls[0]}")
    assert not searching, "look ids up with embedstore.core.ids.IdLookup:\n" + "\n".join(searching)
    tree = ast.parse(MODULES["embedstore.core.ids"].read_text())
    lookups = [
        n.name
        for n in tree.body
        if isinstance(n, ast.ClassDef) and any(_called(c) == "searchsorted" for c in ast.walk(n))
    ]
    assert lookups == ["IdLookup"]
