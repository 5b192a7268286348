"""The package's import graph, read from the source: every `import` of an autovit_ray module, at the top
of a file or inside a function (a lazy import is still an arrow between two modules). It has no circles,
and no module imports an entry point (a CLI) except a `__main__.py`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autovit_ray"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def top_level_names(path: Path) -> set[str]:
    """The names a module binds at its top level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def lazy_exports(package: str, modules: dict[str, Path]) -> dict[str, str]:
    """{name: submodule} of what a package hands out lazily (a module `__getattr__`, as autovit_ray.data
    does): names its `__init__.py` does not bind, bound by one of its direct submodules. `from package
    import name` imports that submodule, an arrow the graph must see."""
    own = top_level_names(modules[package])
    if "__getattr__" not in own:
        return {}
    out = {}
    for name, path in modules.items():
        if name.rpartition(".")[0] == package and path.name != "__init__.py":
            out.update({n: name for n in top_level_names(path) - own if not n.startswith("_")})
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path],
                     lazy: dict[str, dict[str, str]] | None = None) -> set[str]:
    """The package's modules that module `name` imports anywhere in its file (`lazy`: each package's
    `lazy_exports`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` / `from .. import y`
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            # `from a import b` imports module a, and module a.b when b is one (or a lazy export of a's)
            exports = (lazy or {}).get(base, {})
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names),
                       *(exports[alias.name] for alias in node.names if alias.name in exports)]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package)
    lazy = {name: lazy_exports(name, modules) for name, path in modules.items() if path.name == "__init__.py"}
    return {name: imported_modules(name, path, modules, lazy) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def is_entry_point(path: Path) -> bool:
    """A CLI module: a `__main__.py`, a `cli.py` / `*_cli.py`, or any file with a `__main__` guard."""
    return (path.name in ("__main__.py", "cli.py") or path.name.endswith("_cli.py")
            or 'if __name__ == "__main__"' in path.read_text())


def entry_point_imports(package: Path = PACKAGE) -> list[str]:
    """'importer -> entry point' for each module other than a `__main__.py` that imports an entry point."""
    modules = module_files(package)
    entry_points = {name for name, path in modules.items() if is_entry_point(path)}
    return [f"{name} -> {target}" for name, targets in sorted(import_graph(package).items())
            if modules[name].name != "__main__.py" for target in sorted(targets & entry_points)]


def test_the_package_has_no_import_circles():
    graph = import_graph()
    assert len(graph) > 50 and graph["autovit_ray.plan"] >= {"autovit_ray.space"}  # the graph was read
    assert circles(graph) == []


def test_nothing_imports_an_entry_point_but_a_dunder_main():
    modules = module_files()
    assert is_entry_point(modules["autovit_ray.train"]) and is_entry_point(modules["autovit_ray.search.cli"])
    assert not is_entry_point(modules["autovit_ray.ray_train"])
    assert entry_point_imports() == []


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package `pkg` under `root` with these files (paths relative to it)."""
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_entry_point_imports_are_found(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "", "lib.py": "def f():\n    from .tool.cli import main\n",
        "tool/__init__.py": "", "tool/cli.py": "def main():\n    return 0\n",
        "tool/__main__.py": "from pkg.tool.cli import main\nmain()\n",
        "script.py": 'import pkg.lib\nif __name__ == "__main__":\n    pass\n', "user.py": "from . import script\n"})
    assert entry_point_imports(package) == ["pkg.lib -> pkg.tool.cli", "pkg.user -> pkg.script"]


def test_circles_are_found_through_lazy_and_relative_imports(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "", "a.py": "from .sub import b\n", "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from ..c import g\n", "c.py": "import pkg.a\n", "d.py": "from pkg import c\n"})
    graph = import_graph(package)
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg", "pkg.c"}
    assert circles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_lazy_exports_of_a_package_are_arrows_to_their_modules(tmp_path):
    package = _package(tmp_path, {
        "__init__.py": "", "data/__init__.py": "def __getattr__(name):\n    ...\n",
        "data/loaders.py": "from ..user import g\ndef build():\n    pass\n", "user.py": "from .data import build\n"})
    graph = import_graph(package)
    assert graph["pkg.user"] == {"pkg.data", "pkg.data.loaders"}
    assert circles(graph) == [["pkg.data.loaders", "pkg.user"]]
    assert import_graph(PACKAGE)["autovit_ray.evaluation"] >= {"autovit_ray.data.transforms"}


def unresolved_imports(package: Path = PACKAGE) -> list[str]:
    """'module: target' for each import, anywhere in a file (lazy ones too, which run only when their
    function does), of a module of the package that does not exist: a moved module's stale path."""
    modules = module_files(package)
    root = package.name
    out = []
    for name, path in sorted(modules.items()):
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [base]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            out += [f"{name}: {t}" for t in targets if (t == root or t.startswith(root + ".")) and t not in modules]
    return out


def test_every_import_of_a_package_module_resolves(tmp_path):
    assert unresolved_imports() == []
    package = _package(tmp_path, {"__init__.py": "", "sub/__init__.py": "", "sub/a.py": "def f():\n    from .gone import g\n"})
    assert unresolved_imports(package) == ["pkg.sub.a: pkg.sub.gone"]
