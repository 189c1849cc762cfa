"""The house stays standing: layers point down, no cycles, no hidden imports, no huge modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mentorflow"

#: Lowest first. A module may import its own layer or a lower one, never a higher one.
LAYERS = {
    "platform": 0,
    "tenants": 1,
    "jobs": 2,
    "delivery": 2,
    "flows": 3,
    "worker": 4,
    "admin": 5,
    "app": 6,
    "cli": 6,
}
#: Entry points that wire everything, like the factory: ``celery -A mentorflow.worker.celery_app``.
ENTRY_POINTS = {"mentorflow.worker.celery_app": 6}
#: Where imports inside a function body are allowed: the factory and the CLI wire everything.
WIRING = ("mentorflow.app", "mentorflow.cli")
MAX_LINES = 600


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    """Return every module of the package by dotted name (migrations aside)."""
    return {
        module_name(path, root): path
        for path in sorted(root.rglob("*.py"))
        if "migrations" not in path.relative_to(root).parts
    }


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """Return (imported module, inside a function?) for each package import of a module."""
    found: list[tuple[str, bool]] = []
    is_package = path.name == "__init__.py"
    root_name = next(iter(known)).split(".")[0]

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        return ".".join([*base, node.module] if node.module else base)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == root_name:
                        found.append((alias.name, in_function))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child)
                if target.split(".")[0] != root_name:
                    continue
                for alias in child.names:
                    # ``from pkg import module`` imports the module; ``from module import name``
                    # imports the module the name lives in.
                    submodule = f"{target}.{alias.name}"
                    found.append((submodule if submodule in known else target, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def import_graph(root: Path) -> dict[str, list[tuple[str, bool]]]:
    modules = package_modules(root)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one module (Tarjan)."""
    edges = {
        name: sorted({target for target, _ in targets if target in graph and target != name})
        for name, targets in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def layer_of(module: str) -> int | None:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    """Return ``importer -> imported`` for every import that points to a higher layer."""
    found = []
    for name, targets in graph.items():
        own = layer_of(name)
        for target, _ in targets:
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                found.append(f"{name} -> {target}")
    return sorted(set(found))


def hidden_imports(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target, in_function in targets
        if in_function and not name.startswith(WIRING)
    )


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool]]]:
    return import_graph(PACKAGE)


def test_every_package_has_a_layer(graph):
    unplaced = sorted({name.split(".")[1] for name in graph if "." in name} - set(LAYERS))
    assert unplaced == [], f"packages with no layer in LAYERS: {unplaced}"


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_layers_point_down(graph):
    assert upward_imports(graph) == []


def test_the_kernel_imports_no_other_part(graph):
    kernel = {
        name: targets for name, targets in graph.items() if name.startswith("mentorflow.platform")
    }
    outside = sorted(
        f"{name} -> {target}"
        for name, targets in kernel.items()
        for target, _ in targets
        if not target.startswith("mentorflow.platform")
    )
    assert outside == []


def test_domain_packages_never_import_the_console_or_the_cli(graph):
    domain = ("mentorflow.tenants", "mentorflow.jobs", "mentorflow.delivery", "mentorflow.flows")
    found = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.startswith(domain)
        for target, _ in targets
        if target.startswith(("mentorflow.admin", "mentorflow.cli"))
    )
    assert found == []


def test_no_imports_hidden_in_functions_outside_the_wiring(graph):
    assert hidden_imports(graph) == []


def test_no_module_over_600_lines():
    long = {
        name: count
        for name, path in package_modules(PACKAGE).items()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "mentorflow"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checks_catch_a_cycle_an_upward_import_and_a_hidden_one(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "platform/__init__.py": "",
            "platform/db.py": "from mentorflow.flows.models import Flow\n",
            "flows/__init__.py": "",
            "flows/models.py": "from mentorflow.flows import engine\n",
            "flows/engine.py": (
                "from mentorflow.flows.models import Flow\n\n"
                "def step():\n    from mentorflow.admin import views\n"
            ),
            "admin/__init__.py": "",
            "admin/views.py": "",
        },
    )
    graph = import_graph(package)
    assert cycles(graph) == [["mentorflow.flows.engine", "mentorflow.flows.models"]]
    assert upward_imports(graph) == [
        "mentorflow.flows.engine -> mentorflow.admin.views",
        "mentorflow.platform.db -> mentorflow.flows.models",
    ]
    assert hidden_imports(graph) == ["mentorflow.flows.engine -> mentorflow.admin.views"]
