"""Issue 21 item 6: a run's pid file (OUT/runs/<id>/.sweep.pid) is trusted only for the very process the
sweep started (host and process start time), so a sweep killed with -9 never leaves a run "running, skipped"
for ever; runlock warns where the mount makes flock local to each host."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import runlock
import sweep
from conftest import ROOT, TINY_CONFIG

CATS = ["math.AC", "cs.CV", "cs.AI"]


def _plan(tmp_path, store):
    plan = {"name": "locks", "store": {"data_dir": str(store)},
            "grid": {"model_config": [str(TINY_CONFIG)], "seed": [0]},
            "fixed": {"categories": CATS, "batch_size": 4, "token_budget": 400000, "eval_windows": 8,
                      "skip_test_eval": True}}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan))
    return p


def _sweep(*argv):
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _status_of(plan, out, rid):
    r = _sweep("status", plan, "--out", out)
    assert r.returncode == 0, r.stderr
    row = next(l for l in r.stdout.splitlines() if l.startswith(rid))
    return row.split()[1]


def test_a_pid_file_left_by_kill_9_never_makes_a_run_running(synthetic_store, tmp_path):
    """The real path: `sweep.py run` killed with -9 (and its run with it, as a node crash does) leaves the pid
    file; the run is then not "running", also when a later process on this host gets the same pid (faked
    here: the file rewritten to name a live process with the recorded start of the dead one), nor when the
    file names another host's process; `run` resumes it instead of skipping it."""
    plan = _plan(tmp_path, synthetic_store)
    out = tmp_path / "sw"
    rid = sweep.expand(sweep.load_plan(plan))[0][0]
    pid_file = out / "runs" / rid / sweep.PID_FILE
    proc = subprocess.Popen([sys.executable, str(ROOT / "sweep.py"), "run", str(plan), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not pid_file.is_file() and time.time() < deadline:
            time.sleep(0.1)
        assert pid_file.is_file(), "the sweep wrote no pid file"
        time.sleep(0.2)  # written atomically; read it once it is there
        record = json.loads(pid_file.read_text())
        assert record["host"] == socket.gethostname() and record["start"]
        assert _status_of(plan, out, rid) == "running"  # its train.py may not hold the run's lock yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_pid = record["pid"]
    try:
        os.killpg(run_pid, signal.SIGKILL)  # the run dies too (its own session): a crashed node
    except ProcessLookupError:
        pass
    deadline = time.time() + 30
    while sweep._pid_alive(run_pid) and time.time() < deadline:
        time.sleep(0.1)
    assert pid_file.is_file()  # kill -9: nothing removed it
    assert _status_of(plan, out, rid) != "running"

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a later process with the run's pid: the file's start time is not its own
        pid_file.write_text(json.dumps({**record, "pid": other.pid}))
        assert _status_of(plan, out, rid) != "running"
        pid_file.write_text(str(other.pid))  # the old format: a bare pid says nothing
        assert _status_of(plan, out, rid) != "running"
        pid_file.write_text(json.dumps({"pid": other.pid, "host": "another-host", "start": None}))
        assert _status_of(plan, out, rid) != "running"
        sweep.write_pid_file(pid_file.parent, other.pid)  # the control: the very process, here
        assert _status_of(plan, out, rid) == "running"
        r = _sweep("run", plan, "--out", out)  # ... is skipped by a later run, as it should be
        assert "running in another process, skipped" in r.stdout, r.stdout + r.stderr
    finally:
        other.kill()
        other.wait()
    pid_file.write_text(json.dumps({**record, "pid": os.getpid()}))  # a reused pid again: run does not skip
    assert sweep.run_status(out, rid)[0] in ("interrupted", "pending")
    assert sweep.pid_file_process(pid_file) is None


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:1 / / rw,relatime - ext4 /dev/root rw
40 27 0:50 / {mp} rw,relatime shared:7 - {fstype} server:/export rw,vers={vers},hard,proto=tcp,{opts},addr=10.0.0.1
"""


def test_runlock_warns_once_where_flock_is_local_to_each_host(tmp_path, monkeypatch):
    """A fake /proc/self/mountinfo: the lock directory on NFS with local_lock=flock (or nolock, or local_lock=all;
    Lustre's localflock) warns once per mount, naming the option; the default local_lock=none and a local
    disk do not. A mount point with a space is read back from mountinfo's \\040."""
    d = tmp_path / "shared dir"
    d.mkdir()
    mp = str(d.resolve()).replace(" ", "\\040")
    info = tmp_path / "mountinfo"
    monkeypatch.setattr(runlock, "MOUNTINFO", str(info))
    cases = [("nfs4", "4.2", "local_lock=flock", True), ("nfs", "3", "nolock,local_lock=all", True),
             ("lustre", "2", "localflock", True), ("gfs2", "1", "localflocks", True), ("nfs4", "4.2", "local_lock=none", False),
             ("nfs4", "4.2", "local_lock=posix", False)]
    for fstype, vers, opts, unsafe in cases:
        info.write_text(MOUNTINFO.format(mp=mp, fstype=fstype, vers=vers, opts=opts))
        monkeypatch.setattr(runlock, "_warned_mounts", set())
        warnings = []
        for name in ("a.lock", "b.lock"):
            runlock.acquire(d / name, warn=warnings.append).release()
        if unsafe:
            assert len(warnings) == 1, (opts, warnings)
            assert str(d.resolve()) in warnings[0] and opts.split(",")[-1] in warnings[0], warnings
        else:
            assert warnings == [], (opts, warnings)
        found = runlock.node_local_mount(d / "x", info)
        assert (found is not None) == unsafe and (not unsafe or found[:2] == (str(d.resolve()), fstype))
    assert runlock.node_local_mount(tmp_path, info) is None  # outside the NFS mount: the local root
    assert runlock.node_local_mount(tmp_path, tmp_path / "missing") is None  # no mountinfo: nothing known


def test_a_pid_file_naming_no_real_process_is_not_running(tmp_path):
    """A garbled pid file naming pid -1 (kill(-1, 0) succeeds: every process) or 0 (this process group) on
    this host, with no start recorded, made its run "running, skipped" for ever."""
    out = tmp_path / "sw"
    rd = out / "runs" / "r"
    rd.mkdir(parents=True)
    (rd / "metrics.jsonl").write_text("")
    for pid in (-1, 0, "12ab", None):
        (rd / sweep.PID_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "start": None}))
        assert sweep.pid_file_process(rd / sweep.PID_FILE) is None, pid
        assert sweep.run_status(out, "r")[0] == "interrupted", pid
