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


BUILD_PROBE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import conftest

class Factory:  # tmp_path_factory as an xdist worker sees it: <session tmp>/popen-gwN
    def getbasetemp(self):
        return Path(sys.argv[1]) / ("popen-" + sys.argv[3])

def build(path):
    with open(Path(sys.argv[1]) / "builds", "a") as f:
        f.write(sys.argv[3] + "\\n")
    time.sleep(1.0)  # long enough for the other worker to arrive while this one builds
    path.mkdir()
    (path / "x").write_text("built")

print(conftest.built_once(Factory(), "probe", build))
"""


def test_two_workers_build_once_and_share_the_result(tmp_path):
    """Two xdist workers asking for one built_once fixture at the same time: one builds, the other waits for it
    (the file lock), and both get the same finished directory."""
    import os
    import subprocess
    import sys
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_PROBE, str(tmp_path), str(ROOT / "tests"), w],
                              env={**env, "PYTEST_XDIST_WORKER": w}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in ("gw0", "gw1")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len((tmp_path / "builds").read_text().split()) == 1
    paths = {o.strip().splitlines()[-1] for o, _ in outs}
    assert paths == {str(tmp_path / "probe")} and (tmp_path / "probe" / "x").read_text() == "built"
