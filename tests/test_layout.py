"""The architecture as a test: imports point down the layers, nothing imports the CLI, no circles.

Every import statement counts, including the ones inside functions (the lazy imports that keep
`amigo-burst --help` fast still point somewhere). Layers, top to bottom (docs/architecture.md):

    cli -> lifecycle -> planner -> planning | state | runners -> shared vocabulary
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VOCAB = {"amigo_burst", "amigo_burst.config", "amigo_burst.errors", "amigo_burst.secrets", "amigo_burst.stages",
         "amigo_burst.targets", "amigo_burst.clouds", "amigo_burst.numbers"}
# what each layer may import besides itself, the shared vocabulary and train/'s shared modules
ALLOWED = {
    "cli": {"cli", "lifecycle", "planner", "planning", "state", "runners"},
    "lifecycle": {"lifecycle", "planner", "planning", "state", "runners"},
    "planner": {"planning", "state"},
    "planning": {"planning"},
    "state": {"state"},
    "runners": {"runners"},
    "vocab": set(),
}
# the controller reads the stage schema and the store, and prepares data with train/'s own code
# (train/prepare.py, its formatting in train/formats.py), so the two count and cut rows alike; it loads
# models with train/loader.py, the one loader of eval, try, export and the benchmark
TRAIN_SHARED = ("train.schema", "train.storage", "train.prepare", "train.formats", "train.loader")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Modules PATH imports (absolute, ours only), wherever the import statement stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if (REPO / Path(*full.split("."))).with_suffix(".py").exists()
                        or (REPO / Path(*full.split("."))).is_dir() else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] in ("amigo_burst", "train")}


def graph() -> dict[str, set[str]]:
    files = [p for root in ("amigo_burst", "train") for p in (REPO / root).rglob("*.py")]
    return {module_name(p): imports(p) for p in files}


def layer(module: str) -> str:
    if module in VOCAB or module == "amigo_burst.demo":
        return "vocab"
    parts = module.split(".")
    return parts[1] if parts[0] == "amigo_burst" else "train"


@pytest.mark.parametrize("module", sorted(m for m in graph() if m.startswith("amigo_burst")))
def test_imports_point_down_the_layers(module):
    mine = layer(module)
    for dep in graph()[module]:
        if dep.startswith("train"):
            assert dep.startswith(TRAIN_SHARED), f"{module} imports {dep}: the controller uses train/ only for " \
                                                 "its schema, the store and data preparation"
            continue
        theirs = layer(dep)
        assert theirs == "vocab" or theirs in ALLOWED[mine], f"{module} ({mine}) imports {dep} ({theirs})"


def test_train_never_imports_the_controller():
    for module, deps in graph().items():
        if module.startswith("train"):
            assert not [d for d in deps if d.startswith("amigo_burst")], module


def test_production_code_does_not_import_the_test_model():
    users = [m for m, deps in graph().items() if "train.tiny" in deps]
    assert users == [], users


def test_no_import_circles():
    g = graph()
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
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

    for v in g:
        if v not in index:
            visit(v)
    assert circles == []


def test_every_layer_says_what_it_owns():
    for pkg in ("cli", "lifecycle", "planning", "state", "runners"):
        doc = ast.get_docstring(ast.parse((REPO / "amigo_burst" / pkg / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), pkg
