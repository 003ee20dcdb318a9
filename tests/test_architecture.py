"""The shape of ``lib/qts``: no import circles, and the safety checks never import the gate that calls them.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import`` and ``from ...
import`` inside qts, relative or absolute, at module level AND inside functions (a lazy import that closes a
circle still ties the two modules together: it only moves the failure from import time to the first call).
Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` and ``a``, so those count as imported too, except
the packages that contain the importer (Python has already started them when the importer runs) unless the
importer reads a name defined in that ``__init__`` (``from . import SOMETHING`` that is not a submodule).
"""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def modules(root: Path = LIB / "qts") -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _targets(name: str, is_pkg: bool, node, known) -> list[tuple[str, bool]]:
    """The qts modules one import statement names, each with whether names defined IN it are read (a ``from X
    import y`` reads X's own names unless every y is a submodule: ``from . import helpers`` inside a package
    needs only the submodule, ``from . import CONSTANT`` needs the package's ``__init__`` to have run)."""
    if isinstance(node, ast.Import):
        return [(a.name, True) for a in node.names if a.name in known]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
    reads_own = len(subs) < len(node.names)
    return [(m, True) for m in subs] + ([(mod, reads_own)] if mod in known else [])


def import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import}, with the package ``__init__``s run on the way."""
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for t, reads_own in _targets(name, is_pkg, node, mods):
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    # a package holding the importer has already started: it counts only when a name is read
                    # from it (that name may not be defined yet)
                    inside = name == dep or name.startswith(dep + ".")
                    if dep in mods and dep != name and (not inside or (dep == t and reads_own)):
                        graph[name].setdefault(dep, node.lineno)
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules, as one concrete circle a -> b -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for root in sorted(graph):  # Tarjan, iterative: no recursion limit to raise
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.add(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_shortest_circle(graph, g) for g in groups]


def _shortest_circle(graph, group: set[str]) -> list[str]:
    start = min(group)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
            if w in group and w not in prev:
                prev[w] = v
                queue.append(w)
    return sorted(group)


def describe(graph, mods, circle: list[str]) -> str:
    top = mods[circle[0].split(".")[0]].parent.parent  # the folder holding the top package
    steps = [f"{a} ({mods[a].relative_to(top)}:{graph[a][b]}) -> {b}" for a, b in zip(circle, circle[1:])]
    return "import circle: " + " | ".join(steps)


# -- the checker itself, on made-up packages ---------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return modules(root / "pkg")


def test_the_checker_finds_a_circle_through_a_lazy_import_and_one_through_a_package_init(tmp_path):
    mods = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def f():\n    from .a import x\n",                 # lazy, still a circle
        "pkg/sub/__init__.py": "from .inner import thing\n",
        "pkg/sub/inner.py": "from ..c import y\n",
        "pkg/c.py": "from pkg.sub.other import z\n",                       # runs pkg/sub/__init__ first
        "pkg/sub/other.py": "",
        "pkg/cfg/__init__.py": "from .x import f\nLIMIT = 3\n",
        "pkg/cfg/x.py": "from . import LIMIT\n",                        # reads the package's own name
    })
    graph = import_graph(mods)
    found = {frozenset(c) for c in circles(graph)}
    assert found == {frozenset({"pkg.a", "pkg.b"}), frozenset({"pkg.sub", "pkg.sub.inner", "pkg.c"}),
                     frozenset({"pkg.cfg", "pkg.cfg.x"})}
    text = describe(graph, mods, next(c for c in circles(graph) if "pkg.a" in c))
    assert "pkg.a (" in text and "pkg/a.py:1" in text and "pkg/b.py:2" in text


def test_the_checker_accepts_a_package_init_that_imports_its_own_modules(tmp_path):
    mods = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/cli/__init__.py": "from . import cmds\nfrom .base import cli\n",
        "pkg/cli/base.py": "cli = 1\n",
        "pkg/cli/cmds.py": "from .base import cli\nfrom ..lib import f\nfrom . import base\n",
        "pkg/lib.py": "def f():\n    pass\n",
    })
    assert circles(import_graph(mods)) == []


# -- the real tree -----------------------------------------------------------------------------------------

def test_lib_qts_has_no_import_circle():
    mods = modules()
    assert "qts.cli" in mods and "qts.gate" in mods  # the walk found the tree
    graph = import_graph(mods)
    found = circles(graph)
    assert not found, "\n".join(describe(graph, mods, c) for c in found)


def test_no_safety_check_imports_the_gate():
    """The gate calls the checks (kill switch, breaker, risk layers, grants); they share its verdict types
    through qts.verdicts. A check importing qts.gate, even lazily, would make the gate's checks depend on
    the gate itself."""
    mods = modules()
    graph = import_graph(mods)
    checks = [m for m in mods if m == "qts.verdicts" or m == "qts.safety" or m.startswith("qts.safety.")]
    assert len(checks) > 5
    offenders = {m: graph[m]["qts.gate"] for m in checks if "qts.gate" in graph[m]}
    assert not offenders, f"safety modules importing qts.gate (module: line): {offenders}"
