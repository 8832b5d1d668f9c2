"""The shape of the code: imports point one way, one composition root, small modules and functions.

Packages, lowest first: recsys <- ragar <- eval <- serving. ``ragar.cli`` is the composition root:
it may import everything, and nothing in the product imports it (tests drive it, as users do).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys", "ragar", "eval", "serving")
ROOT_PKG = "ragar.cli"
FORBIDDEN = {
    "recsys": {"ragar", "eval", "serving"},
    "ragar": {"eval", "serving"},
    "eval": {"serving"},
    "serving": set(),
}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _node(module: str) -> str | None:
    """The architecture node a dotted module belongs to (the composition root is its own node)."""
    if module == ROOT_PKG or module.startswith(ROOT_PKG + "."):
        return ROOT_PKG
    top = module.split(".")[0]
    return top if top in PACKAGES else None


def _imports(path: Path) -> set[str]:
    """Every absolute import of a file, module level and inside functions, as dotted names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _files():
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            yield f, ".".join(f.relative_to(ROOT).with_suffix("").parts)


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for f, mod in _files():
        src = _node(mod)
        for imp in _imports(f):
            dst = _node(imp)
            if dst and dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def test_imports_point_one_way():
    bad = []
    for f, mod in _files():
        node = _node(mod)
        if node == ROOT_PKG:
            continue
        hit = {_node(i) for i in _imports(f)} & FORBIDDEN[node]
        if hit:
            bad.append(f"{f.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, bad


def test_one_composition_root():
    """Only the command line wires packages together; no product module imports it."""
    users = [f"{f.relative_to(ROOT)}" for f, mod in _files()
             if _node(mod) != ROOT_PKG and any(_node(i) == ROOT_PKG for i in _imports(f))]
    assert not users, users


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph ``edges`` as the path that closes it, or None."""
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> list[str] | None:
        state[n] = 1
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*path, n, m]
            if m not in state and (cycle := visit(m, [*path, n])):
                return cycle
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (cycle := visit(n, [])):
            return cycle
    return None


def test_no_package_level_cycle():
    edges = _edges()
    assert "recsys" in edges["ragar"] and {"eval", "serving"} <= edges[ROOT_PKG]  # the graph sees the imports
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_check_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    # what the old layout had: the command line inside ragar, importing eval, which imports ragar
    assert find_cycle({"ragar": {"eval", "recsys"}, "eval": {"ragar"}}) is not None


def test_modules_and_functions_stay_small():
    big = []
    for f, _ in _files():
        text = f.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{f.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    big.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not big, big


def test_the_command_line_starts_without_the_heavy_packages():
    """Reading a config and listing the commands import neither diffusers, LightGBM, sklearn nor
    pyplot (the commands that need them import them): they were ~3.5 s of every ``ragar`` process's
    start-up, ``--help`` included, and the distributed tests start about fifteen such processes."""
    import subprocess
    import sys

    heavy = ("diffusers", "lightgbm", "sklearn", "matplotlib.pyplot")
    code = f"import sys, ragar.cli, ragar.config; print([m for m in {heavy!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", f"imported at start-up: {r.stdout.strip()}"
