"""The house has floors: a product file imports only files on lower floors, never inside a
function, never bench/ or tests/; the import graph has no circle. Parsed with ast, nothing runs.

    python -m pytest -q tests/test_imports.py

A new product file gets a floor in FLOORS (the test fails until it has one). An import inside
`if __name__ == "__main__":` is allowed (a script's own entry point), as are third-party ones.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# floor -> the product modules on it; a module imports only modules on lower floors
FLOORS = {
    0: ["rewards", "optim", "models", "dist", "decode"],  # pure functions, plumbing with no project import
    1: ["data", "data.synth", "data.oracle", "data.real", "data.download", "sample", "runs"],
    2: ["memory", "report", "teachers"],                 # the memory model, tables, teacher clients
    3: ["presets", "checks"],                            # presets and flag validation
    4: ["probes"],                                       # stage 1
    5: ["exgrpo", "evaluate"],                           # stage 3, evaluation
    6: ["baselines"],
    7: ["train"],                                        # the pipeline
}
FLOOR = {m: f for f, mods in FLOORS.items() for m in mods}


def product_files():
    """module name -> path, for every .py of the product (not bench/, tests/, docs/)."""
    out = {p.stem: p for p in ROOT.glob("*.py")}
    out.update({"data" if p.stem == "__init__" else f"data.{p.stem}": p for p in (ROOT / "data").glob("*.py")})
    return out


def _is_main_guard(node):
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)


def imports(module, path, known):
    """[(imported project module, line, inside a function?)] of one file; `data.x` imports resolve
    to the submodule when it is one, else to the package."""
    found = []

    def resolve(name):
        while name and name not in known and name not in ("bench", "tests"):
            name = name.rpartition(".")[0]
        return name or None

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _is_main_guard(child):
                continue   # a script's entry point may import what it runs
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:   # relative: only data/ uses the package
                    base = "data" + (f".{base}" if base else "")
                names = [f"{base}.{a.name}" for a in child.names] + [base]
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
                continue
            hits = {resolve(n) for n in names} - {None}
            # `from data import synth` names the submodule; drop the bare package when a submodule matched
            if any(h.startswith("data.") for h in hits):
                hits.discard("data")
            found.extend((h, child.lineno, in_function) for h in sorted(hits) if h != module)

    visit(ast.parse(path.read_text()), False)
    return found


def graph():
    files = product_files()
    return files, {m: imports(m, p, set(files)) for m, p in files.items()}


def test_every_product_file_has_a_floor():
    files, _ = graph()
    assert sorted(set(files) - set(FLOOR)) == [], "give the new file a floor in FLOORS"
    assert sorted(set(FLOOR) - set(files)) == [], "a file in FLOORS no longer exists"


def test_no_product_file_imports_bench_or_tests():
    _, g = graph()
    bad = [(m, h, line) for m, edges in g.items() for h, line, _ in edges if h in ("bench", "tests")]
    assert bad == []


def test_no_project_import_inside_a_function():
    _, g = graph()
    hidden = [(m, h, line) for m, edges in g.items() for h, line, inner in edges if inner]
    assert hidden == [], "move these imports to the top of the file (a circle they hid must be broken instead)"


def test_every_import_goes_down_a_floor():
    _, g = graph()
    up = [f"{m} (floor {FLOOR[m]}) imports {h} (floor {FLOOR[h]}) at line {line}"
          for m, edges in g.items() for h, line, _ in edges if FLOOR[h] >= FLOOR[m] and not
          (m.startswith("data") and h.startswith("data"))]   # the data package's own files may use each other ...
    assert up == []


def test_no_import_circle():
    """... but nothing, the data package included, may import in a circle."""
    _, g = graph()
    edges = {m: {h for h, _, _ in e} for m, e in g.items()}
    state = {}

    def dfs(m, stack):
        state[m] = "open"
        for n in edges.get(m, ()):
            if state.get(n) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                dfs(n, stack + [n])
        state[m] = "done"

    for m in edges:
        if m not in state:
            dfs(m, [m])


def test_the_checker_sees_what_it_must(tmp_path):
    """The parser itself: a hidden import, an upward one and a __main__ one, in a scratch file."""
    f = tmp_path / "x.py"
    f.write_text("import rewards\nfrom data import synth\n\ndef f():\n    import train\n\n"
                 "if __name__ == '__main__':\n    import probes\n")
    found = imports("x", f, {"rewards", "data", "data.synth", "train", "probes"})
    assert found == [("rewards", 1, False), ("data.synth", 2, False), ("train", 5, True)]
