"""The analysis's house (issue 17, item 6; issue 23): analyze.py is the command line and the work lives in
analysis/, one concern per module, no module over ~500 lines and no function over ~60 (by the AST: a
function's lines from its `def` to its last statement, methods and nested functions each counted on their
own); and analysis/ imports none of the top-level scripts (analyze.py, baselines.py, ...), so there is no
import loop between them. That a move changed no result is checked by benchmarks/golden_analysis.py
(byte-for-byte outputs of fabricated sweeps before and after)."""
import ast

import pytest

from conftest import ROOT

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
FILES = [ROOT / "analyze.py", *sorted((ROOT / "analysis").glob("*.py"))]


def functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_module_and_function_sizes(path):
    text = path.read_text()
    n_lines = len(text.splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path.name}: {n_lines} lines (limit {MAX_MODULE_LINES})"
    long = [f"{name} (line {line}: {n} lines)" for name, line, n in functions(ast.parse(text))
            if n > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_analysis_imports_no_top_level_script():
    """analysis/ may import the library modules (store.py, random_window_dataset.py) but no script that
    imports analysis/ back: such a loop made analysis/ reach baselines.py, which reached analysis/."""
    scripts = {p.stem for p in ROOT.glob("*.py") if "from analysis" in p.read_text() or "import analysis" in p.read_text()}
    assert {"analyze", "baselines"} <= scripts  # the scan sees the scripts that use analysis/
    bad = []
    for path in sorted((ROOT / "analysis").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in scripts]
    assert not bad, "; ".join(bad)
