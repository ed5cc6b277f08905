"""The package's shape, held by an import graph read from the source (ast, nothing imported):

* the top-level parts are layered and import only downward (or within themselves);
* no import circle between modules, counting imports inside functions too;
* at most 8 modules loose at the package root, no source file over 400 lines;
* production code never imports the test-model builders (``tiny``) of another part.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "fusionaudio"

#: Bottom to top. A module may import its own part and the parts of lower layers, nothing else.
LAYERS = [
    {"errors"},
    {"records", "structured", "sampling"},
    {"commands"},
    {"audio", "loading"},
    {"gama", "audsem", "demo", "evaluate"},
    {"retrieval"},
    {"inference", "benchmarks"},
    {"infer", "train", "pipeline"},
    {"serve"},
    {"cli", "__init__"},
]
LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules] or [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.startswith("fusionaudio") and name != me:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: imports_of(p, set(files)) for m, p in files.items()}


def part_of(module: str) -> str:
    rest = module.split(".")[1:]
    return rest[0] if rest else "__init__"


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in graph()}
    assert parts <= set(LAYER_OF), f"parts without a layer: {sorted(parts - set(LAYER_OF))}"


def test_imports_go_downward_only():
    wrong = []
    for module, targets in graph().items():
        src = part_of(module)
        for target in targets:
            dst = part_of(target)
            if dst != src and (dst == "__init__" or LAYER_OF[dst] >= LAYER_OF[src]):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that climb up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    g = graph()
    # a package's __init__ importing its own modules is not a circle with them (Python resolves it)
    edges = {m: {t for t in ts if not (m == t.rpartition(".")[0] and (PKG / "/".join(m.split(".")[1:]) / "__init__.py").exists())}
             for m, ts in g.items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_few_loose_modules_and_short_files():
    loose = sorted(p.name for p in PKG.glob("*.py"))
    assert len(loose) <= 8, loose
    long = {str(p.relative_to(SRC)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"


def test_production_code_does_not_import_test_builders():
    users = [f"{m} -> {t}" for m, ts in graph().items() for t in ts
             if t.rsplit(".", 1)[-1] in ("tiny", "tiny_ase", "tiny_models") and not m.rsplit(".", 1)[-1].startswith("tiny")
             and part_of(m) == part_of(t) and not m.endswith("__main__")]
    allowed = {"fusionaudio.pipeline.stages.common -> fusionaudio.pipeline.tiny_models"}
    assert set(users) <= allowed, sorted(set(users) - allowed)


def test_functions_stay_short():
    long = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 90:
                long.append(f"{p.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
