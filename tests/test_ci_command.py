"""CI runs what README tells a contributor to run: .ci/run's test command is README's full-suite command, and the
tests a worker shares are built once (tests/conftest.py, built_once)."""
import re

import conftest
from conftest import ROOT


def test_ci_runs_readme_full_suite_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m pytest .*tests$", readme, flags=re.M)
    full = [c for c in commands if "not slow" not in c]
    assert len(full) == 1, commands  # one full-suite command, beside the fast loop
    ci = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in l and not l.startswith("#")]
    assert ci == full, (ci, full)


def test_built_once_builds_once_and_again_after_a_failed_build(tmp_path_factory):
    calls = []

    def build(path):
        calls.append(path)
        path.mkdir()
        if len(calls) == 1:
            raise RuntimeError("a build that fails leaves no .built mark")
        (path / "x").write_text("built")
    name = f"built_once_probe_{id(calls)}"
    try:
        conftest.built_once(tmp_path_factory, name, build)
    except RuntimeError:
        pass
    a = conftest.built_once(tmp_path_factory, name, build)  # the half-built one is removed and built again
    b = conftest.built_once(tmp_path_factory, name, build)
    assert a == b and len(calls) == 2 and (a / "x").read_text() == "built"


def test_a_serial_run_builds_each_module_fixture_once():
    """Handing slow tests out first must not split a module whose module-scoped fixture serves both slow and
    fast tests: run serially (no -n), pytest tears the fixture down when another module's test comes between,
    and builds it again (test_ngram's kn_store, test_hub_download's hub were each built twice)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # a serial run, not an xdist worker's
    r = subprocess.run([sys.executable, "-m", "pytest", "--setup-plan", "-q", "-p", "no:cacheprovider",
                        "tests/test_ngram.py", "tests/test_hub_download.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    setups = re.findall(r"SETUP +M (\w+)", r.stdout)
    assert r.returncode == 0 and {"kn_store", "hub", "hf_home"} <= set(setups), r.stdout[-3000:] + r.stderr[-2000:]
    assert sorted(setups) == sorted(set(setups)), setups
