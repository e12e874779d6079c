"""What analyze.py costs and says while it runs (issue 23, issue 21 item 7): --verdicts_only computes only
what the verdicts read and decides every hypothesis exactly as the full analysis does; progress and each
warning go to stderr once; SIGTERM stops the analysis with its bootstrap workers (a real subprocess)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import analyze
import simulate
from conftest import ROOT


def small_sweep(root):
    """K in {1, 3} x 4 subset seeds, K = 11, three budgets, replicates at K = 1: every verdict computable."""
    simulate.p1_sweep(root, Ks=(1, 3), seeds=range(4), k11_seeds=(0,), budgets=(10e6, 90e6, 810e6),
                       replicate_Ks=(1,), replicate_subsets=(0,))


@pytest.mark.slow  # two analyses of one sweep, full and verdicts-only (~10 CPU-s): the fast loop stays under 200 s
def test_verdicts_only_decides_as_the_full_analysis(tmp_path, capsys):
    """The same verdicts, headline, H1-H6 tables, dilution fit and form comparison with and without the flag;
    with it: no figures, no mixing-law section, and report.md says in one line what was skipped."""
    out = {}
    for label, extra in (("full", ["--n_boot_descriptive", "8"]), ("verdicts", ["--verdicts_only"])):
        small_sweep(tmp_path / label)
        d = analyze.main([str(tmp_path / label), "--n_boot", "24", "--jobs", "1", "--no_baselines", *extra])
        out[label] = (json.loads((d / "fits.json").read_text()), (d / "report.md").read_text(), sorted(d.glob("*.png")))
    (full, rep_full, png_full), (fast, rep_fast, png_fast) = out["full"], out["verdicts"]
    for k in ("verdicts", "h1", "h2", "h4", "h5", "h6", "comparison", "diagnostics"):
        assert fast[k] == full[k], k
    dil = [f for f in full["fits"] if f["form"] == "dilution" and f["subset"] == "all"]
    assert dil and dil == [f for f in fast["fits"] if f["form"] == "dilution" and f["subset"] == "all"]
    assert full["verdicts"]["H3 dilution law"]["verdict"] != "undecided"  # the comparison above decided something
    assert rep_fast.split("\n")[:3] == rep_full.split("\n")[:3]
    assert analyze.SKIPPED in rep_fast and analyze.SKIPPED not in rep_full and fast["skipped"] == analyze.SKIPPED
    assert png_full and not png_fast
    assert "## Competing mixing laws" in rep_full and "## Competing mixing laws" not in rep_fast
    assert fast["mixing_laws"] is None and fast["transfer"] is None and fast["isoflop"] is None
    # the fits no verdict reads take --n_boot_descriptive resamples (and say so); dilution [all] keeps --n_boot
    boot = {(f["form"], f["subset"]): f["bootstrap"] for f in full["fits"]}
    assert boot["dilution", "all"]["requested"] == 24 and "descriptive" not in boot["dilution", "all"]
    others = [b for k, b in boot.items() if k != ("dilution", "all")]
    assert len(others) >= 4 and all(b["requested"] == 8 and "descriptive" in b for b in others), boot
    # the intervals no coverage run measured say so (disjoint, shared [all], <= 4 epochs); H1's floors were measured
    assert all(("coverage" in b) == (k[1] == "all" or k[1].startswith("epochs")) for k, b in others_k(boot)), boot
    assert rep_full.count("Coverage of these intervals: not measured") == sum("coverage" in b for b in boot.values()) >= 2


def others_k(boot):
    return [(k, b) for k, b in boot.items() if k != ("dilution", "all")]


def test_library_warnings_are_one_line_once(capsys, monkeypatch):
    """A numpy / scipy warning raised during the analysis reaches stderr once, as one 'warning:' line naming
    where it came from (a bootstrap's 'Mean of empty slice' was printed raw, with its source line); a
    bootstrap worker's warnings come back recorded for the parent to say (workers.recording)."""
    import warnings

    import numpy as np
    from analysis import workers

    def noisy(argv=None):
        for _ in range(3):
            np.nanmean(np.array([np.nan]))
            warnings.warn("test_analysis_cost: a library's note", UserWarning)
    monkeypatch.setattr(analyze, "run", noisy)
    analyze.main([])
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "Mean of empty slice" in line] == [
        next(line for line in err if line.startswith("warning: RuntimeWarning from ") and
             line.endswith(": Mean of empty slice"))], err
    assert sum("a library's note" in line for line in err) == 1, err
    assert not [line for line in err if not line.startswith("warning: ")], err  # no raw source line
    out, said = workers.recording(lambda job: np.nanmean(np.array([np.nan] * job)), 2)
    assert np.isnan(out) and len(said) == 1 and said[0].startswith("RuntimeWarning from ") and \
        said[0].endswith(": Mean of empty slice"), said
    assert capsys.readouterr().err == ""  # recorded, not printed


def test_each_analysis_says_its_warnings_and_leaves_the_filters(capsys, monkeypatch):
    """'Once' is per analysis, not per process: a second analyze.main in the same process (design.py's and
    bench_calibration's simulations, the tests on one xdist worker) says its warnings too (they were said by
    the first call only, and the second was silent); the warning filters and showwarning are as they were."""
    import warnings

    def noisy(argv=None):
        warnings.warn("test_analysis_cost: said by every analysis", UserWarning)
    monkeypatch.setattr(analyze, "run", noisy)
    filters, show = list(warnings.filters), warnings.showwarning
    for _ in range(2):
        analyze.main([])
        err = capsys.readouterr().err.splitlines()
        assert sum("said by every analysis" in line for line in err) == 1, err
        assert warnings.filters == filters and warnings.showwarning is show


def test_progress_and_one_warning_on_stderr(tmp_path, capsys):
    """Each long step says when it starts and ends on stderr; the thin-test-split warning is one line for all
    its categories (it was one per category); stdout keeps the results."""
    small_sweep(tmp_path)
    for p in (tmp_path / "runs").glob("*/test_results.json"):  # every category's test split: 2 papers
        t = json.loads(p.read_text())
        t["per_category"] = {c: dict(v, n_papers=2, n_tokens=700) for c, v in t["per_category"].items()}
        p.write_text(json.dumps(t))
    analyze.main([str(tmp_path), "--n_boot", "8", "--jobs", "1", "--no_baselines", "--verdicts_only"])
    o, e = capsys.readouterr()
    assert "H3 dilution law:" in o and "fit_error=" in o
    warnings = [line for line in e.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "11 categories have a thin test split" in warnings[0], e
    for step in ("fit dilution [all], 8 resamples", "cross-validation of 3 forms"):
        assert f"{step} ..." in e and f"{step}: done in" in e
    assert "bootstrap dilution [all]: 8/8" in e


def children(pid):
    """The live (not zombie) processes whose parent is pid."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def alive(pid):
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_leaves_no_bootstrap_worker(tmp_path):
    """SIGTERM once the two bootstrap workers run: analyze.py exits non-zero with one line, and none of its
    child processes is alive 5 s later (they were left orphaned, still refitting)."""
    small_sweep(tmp_path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, str(ROOT / "analyze.py"), str(tmp_path), "--n_boot", "100000", "--jobs", "2",
                          "--no_baselines"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        kids = []
        while time.monotonic() < deadline and p.poll() is None:
            kids = children(p.pid)
            if len(kids) >= 3:  # two workers and multiprocessing's resource tracker
                break
            time.sleep(0.5)
        assert len(kids) >= 3 and p.poll() is None, f"no workers seen: {kids}"
        time.sleep(2)  # let the bootstrap get going
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=60)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("analyze.py: stopped by SIGTERM"), err
    time.sleep(5)
    assert not [k for k in kids if alive(k)], "child processes outlived analyze.py"


CLOSE_PROBE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from analysis import workers
if __name__ == "__main__":
    ex = workers._pool(2)
    futures = [ex.submit(time.sleep, 30) for _ in range(12500)]  # what a 100,000-resample bootstrap queues
    time.sleep(0.5)
    manager = ex._executor_manager_thread
    workers.close_pools()
    print("manager alive:", manager.is_alive(), flush=True)
    raise SystemExit(143)
"""


def test_close_pools_leaves_no_executor_thread_to_race_the_exit():
    """close_pools() returns only once the executor's manager thread has ended: left running (cancelling a
    bootstrap's thousands of queued chunks), it raced concurrent.futures' exit hook, which then wrote to a
    pipe the thread had just closed -- an "OSError: Bad file descriptor" traceback after analyze.py's one-line
    stop message on about every other SIGTERM or Ctrl-C."""
    r = subprocess.run([sys.executable, "-c", CLOSE_PROBE, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 143, r.stderr
    assert "manager alive: False" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr



def test_ctrl_c_says_what_sigterm_says(capsys, monkeypatch):
    """Ctrl-C stops the analysis as SIGTERM does, and from the shell says the same true thing: runs.csv and
    report.md are written in place, so the directory may be incomplete (store.cli's generic 'nothing
    half-written is left behind' was not true of analyze.py). Exit 130. An in-process caller (design.py) still
    gets the KeyboardInterrupt, so that Ctrl-C stops it instead of counting as one failed analysis."""
    import pytest

    def interrupted(argv=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(analyze, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        analyze.main([])
    with pytest.raises(SystemExit) as e:
        analyze.cli()
    assert e.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("analyze.py: stopped by Ctrl-C") and "may be incomplete" in err[0], err


def test_in_process_analysis_leaves_the_callers_sigterm_handler(monkeypatch):
    """analyze.main() called in-process (design.py's simulations, in its pool workers) keeps the caller's
    SIGTERM handling: taking SIGTERM over turned design.py's pool.terminate() into 'analyze.py exited 143',
    one failed simulation, after which the worker went on and design.py hung on SIGTERM. Only the shell
    entry (analyze.cli) owns SIGTERM."""
    seen = []

    def record(argv=None):
        seen.append(signal.getsignal(signal.SIGTERM))
    monkeypatch.setattr(analyze, "run", record)

    def callers(signum, frame):
        pass
    old = signal.signal(signal.SIGTERM, callers)
    try:
        analyze.main([])
        assert seen[-1] is callers
        analyze.cli()
        assert seen[-1] is not callers  # the shell entry stops the analysis (and its workers) on SIGTERM
        assert signal.getsignal(signal.SIGTERM) is callers  # and gives the handler back
    finally:
        signal.signal(signal.SIGTERM, old)


def test_report_says_which_fits_took_fewer_resamples():
    """A fit bootstrapped with --n_boot_descriptive says so in report.md, beside its intervals (fits.json said
    it; the report showed '196 / 4 missing' for a fit of 200 resamples, which reads as one of --n_boot)."""
    from analysis.report import _fit_sections

    def fit(form, subset, requested, descriptive=None):
        boot = {"requested": requested, "used": requested - 4, "dropped_missing_category": 4,
                "dropped_not_converged": 0, **({"descriptive": descriptive} if descriptive else {})}
        return {"form": form, "subset": subset, "formula": "L", "converged": True, "fit_error": 0.01,
                "n_points": 50, "n_runs": 10, "bootstrap": boot,
                "params": {"beta": {"estimate": 0.3, "ci95": [0.2, 0.4]}}}
    note = "200 resamples (--n_boot_descriptive): no verdict reads this fit's intervals"
    text = "\n".join(_fit_sections([fit("dilution", "all", 1000), fit("disjoint", "all", 200, note)], None, {}, False))
    table = [line for line in text.splitlines() if line.startswith("| disjoint | all |")]
    assert len(table) == 1 and "200 drawn" in table[0] and "1000 drawn" in text, text
    section = text.split("### disjoint (all)")[1]
    assert note in section.split("| parameter")[0], text  # said above its intervals
    assert "--n_boot_descriptive" not in text.split("### disjoint (all)")[0].split("## Fitted laws")[1].replace(
        table[0], ""), text  # the dilution fit's rows say nothing of it


@pytest.mark.slow  # two analyses, one with a pool of 2 spawned workers: ~15 CPU-s
def test_results_do_not_depend_on_jobs(tmp_path):
    """The point fits' starts, the cross-validation, the mixing laws' fits, beta-by-K's refits and the bootstraps
    run in the worker processes with --jobs > 1: fits.json and report.md are the same bytes as with --jobs 1
    (every fit and interval, the descriptive ones included)."""
    small_sweep(tmp_path)
    got = []
    for jobs in ("1", "2"):
        d = analyze.main([str(tmp_path), "--n_boot", "16", "--n_boot_descriptive", "8", "--jobs", jobs, "--no_baselines"])
        got.append(((d / "fits.json").read_text(), (d / "report.md").read_text()))
    fits = json.loads(got[0][0])
    assert fits["mixing_laws"] and fits["beta_by_K"] and all(f["bootstrap"]["used"] for f in fits["fits"])  # it ran
    assert got[0] == got[1]


def test_ctrl_c_while_the_pool_starts_leaves_no_worker(monkeypatch):
    """Ctrl-C / SIGTERM while _pool starts its workers (the first point fit, since the starts run in the pool):
    the pool is not in _POOLS yet, so close_pools() could not see it and an in-process caller (design.py, a
    test) kept its spawned workers for as long as it lived."""
    from concurrent import futures

    import pytest
    from analysis import workers
    monkeypatch.setattr(workers, "_POOLS", {})  # a fresh start, whatever pools this process already holds
    real_map, seen = futures.ProcessPoolExecutor.map, []

    def interrupted(self, *a, **k):
        out = list(real_map(self, *a, **k))  # the workers are up
        seen.extend((self._processes or {}).values())
        raise KeyboardInterrupt
    monkeypatch.setattr(futures.ProcessPoolExecutor, "map", interrupted)
    with pytest.raises(KeyboardInterrupt):
        workers._pool(2)
    assert len(seen) == 2 and not workers._POOLS
    assert not [p for p in seen if p.is_alive()], "a started pool's workers outlived the interrupted start"
