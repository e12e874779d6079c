"""The analysis's house (issue 17, item 6): analyze.py is the command line and the work lives in analysis/,
one concern per module, no module over ~500 lines and no function over ~60 (by the AST: a function's lines
from its `def` to its last statement, methods and nested functions each counted on their own); and every
name other code reaches as `analyze.<name>` is still there. That the move changed no result is checked by
benchmarks/golden_analysis.py (byte-for-byte outputs of fabricated sweeps before and after)."""
import ast
import re

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


def test_every_analyze_name_used_elsewhere_is_still_there():
    """Scripts, tests and benchmarks reach the analysis as analyze.<name>: each such name resolves."""
    import analyze
    sources = [*ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    names = {m for p in sources if p.name != "analyze.py"
             for m in re.findall(r"\banalyze\.([A-Za-z_]\w*)\b", p.read_text()) if m != "py"}
    assert len(names) > 20  # the scan found the uses (main, fit_law, run_rows, ...)
    missing = sorted(n for n in names if not hasattr(analyze, n))
    assert not missing, f"analyze.{', analyze.'.join(missing)} no longer exist"
