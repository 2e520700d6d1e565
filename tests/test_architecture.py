"""The house rules, checked: one package, no import cycles, dependencies pointing one way.

The import graph is read from the source with `ast` (every import, including
those inside functions and under TYPE_CHECKING: a cycle there is still two
modules that each need the other), so these tests run without importing or
starting anything.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "peerchat"
# The design card's modules: the only top-level names besides the package.
TOP_LEVEL_MODULES = ("peer_chat", "crypto_utils", "discovery", "storage")

# Layers, from the top down; a module may import its own layer and the ones below.
LAYERS: dict[str, int] = {
    "peer_chat": 5,
    f"{PACKAGE}.__main__": 5,
    f"{PACKAGE}.ui": 4,
    f"{PACKAGE}.net": 3,
    "discovery": 2,
    "storage": 2,
    f"{PACKAGE}.delivery": 2,
    f"{PACKAGE}.completion": 2,
    f"{PACKAGE}.profile_lock": 2,
    f"{PACKAGE}.events": 1,
    f"{PACKAGE}.protocol": 1,
    f"{PACKAGE}.policy": 1,
    f"{PACKAGE}.legacy": 1,
    "crypto_utils": 1,
    f"{PACKAGE}.limits": 0,
    f"{PACKAGE}.errors": 0,
}
PURE_LAYERS = (f"{PACKAGE}.protocol", f"{PACKAGE}.policy", f"{PACKAGE}.legacy")
# What pure code may never use: it is fed bytes and the time, and owns no I/O.
IO_MODULES = frozenset(
    {"asyncio", "socket", "selectors", "threading", "sqlite3", "subprocess", "ifaddr"}
)


def project_modules(folders: tuple[str, ...] = (PACKAGE,)) -> dict[str, Path]:
    modules = {name: ROOT / f"{name}.py" for name in TOP_LEVEL_MODULES}
    for path in sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from peerchat.net import node` imports the module peerchat.net.node.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(folders: tuple[str, ...] = (PACKAGE,)) -> dict[str, set[str]]:
    modules = project_modules(folders)
    return {
        name: {dep for dep in imports_of(name, path) if dep in modules and dep != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)) is not None:
            return cycle
    return None


def layer_of(module: str) -> int:
    if module == PACKAGE:
        return 0  # the package's own __init__: a docstring and the version
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    if not best:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return LAYERS[best]


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_from_imports_are_resolved(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("from . import sibling\nfrom .. import limits\nimport peerchat.errors\n")
    assert imports_of("peerchat.net.x", source) >= {
        "peerchat.net.sibling",
        "peerchat.limits",
        "peerchat.errors",
    }


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph((PACKAGE, "bench", "tests")))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_dependencies_point_down_the_layers() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {dep} (layer {layer_of(dep)})"
        for module, deps in import_graph().items()
        for dep in deps
        if layer_of(dep) > layer_of(module)
    ]
    assert upward == []


def test_pure_layers_use_no_io() -> None:
    modules = project_modules()
    offenders = []
    for name, path in modules.items():
        if not name.startswith(PURE_LAYERS):
            continue
        used = {dep.split(".")[0] for dep in imports_of(name, path)} & IO_MODULES
        io_modules = {
            dep
            for dep in imports_of(name, path)
            if dep in modules and layer_of(dep) >= LAYERS["storage"] and dep != name
        }
        if used or io_modules:
            offenders.append(f"{name}: {sorted(used | io_modules)}")
    assert offenders == []


@pytest.mark.slow
def test_wheel_installs_only_the_design_card_modules_and_the_package(tmp_path: Path) -> None:
    # Build from a copy of the tracked tree, so the checkout is left untouched.
    source = tmp_path / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for relative in filter(None, tracked.split("\0")):
        if (ROOT / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / relative, source / relative)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "-q", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {f"{m}.py" for m in TOP_LEVEL_MODULES} | {PACKAGE}
    in_package = {n for n in names if n.startswith(f"{PACKAGE}/") and n.endswith(".py")}
    assert in_package == {
        path.relative_to(ROOT).as_posix() for path in (ROOT / PACKAGE).rglob("*.py")
    }
    assert "peer-chat = peer_chat:main" in scripts


@pytest.mark.slow
def test_python_dash_m_package_starts_the_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", PACKAGE, "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("1.0.0")
