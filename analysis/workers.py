"""The bootstrap's worker processes: one pool of spawned workers per process, single-threaded BLAS, and
nothing left behind on SIGTERM, Ctrl-C or a parent killed outright."""
import os
import time

_POOLS = {}


def _die_with_parent(parent):
    """In each worker: exit when the parent is gone (killed without a chance to stop its pool: SIGKILL)."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _pool(jobs):
    """One pool of spawned workers per process, reused by every fit (spawning costs ~1 s per worker).
    Workers get single-threaded BLAS: the fits are tiny, and OpenBLAS threads of several processes spinning
    on the same cores made 2 processes slower than 1 (measured, notes.md). Workers end with the parent:
    close_pools() on SIGTERM / Ctrl-C (analyze.main), and a watch thread in each for a parent killed outright."""
    if jobs not in _POOLS:
        import atexit
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        limits = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in limits}
        os.environ.update({k: "1" for k in limits})
        try:
            ex = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                                     initargs=(os.getpid(),))
            try:
                list(ex.map(abs, range(jobs)))  # start the workers while the limits are set
            except BaseException:  # Ctrl-C / SIGTERM now: not in _POOLS yet, so close_pools() cannot see it
                _stop(ex)
                raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        atexit.register(ex.shutdown)
        _POOLS[jobs] = ex
    return _POOLS[jobs]


def recording(fn, job):
    """In a worker: fn(job) with the Python warnings it raised recorded, not printed (each worker would print
    its own copy, in the interpreter's raw format): (result, [one line per warning]) for the parent to say
    once (analysis/progress.py)."""
    import warnings
    from analysis.progress import warning_line
    with warnings.catch_warnings(record=True) as caught:
        out = fn(job)
    return out, [warning_line(w.message, w.category, w.filename, w.lineno) for w in caught]


def run_jobs(fn, jobs_, jobs, each=None):
    """[fn(job) for job in jobs_] in the worker processes, results in order; each worker's warnings said once
    here (analysis/progress.py), and each(result) called as results arrive (a progress count)."""
    from analysis import progress
    futures = [_pool(jobs).submit(recording, fn, j) for j in jobs_]
    out = []
    for f in futures:
        res, said = f.result()
        for line in said:
            progress.warn_once(line)
        out.append(res)
        if each is not None:
            each(res)
    return out


def close_pools():
    """Stop every worker now (their refits are lost): what an interrupted analysis must leave behind is nothing."""
    while _POOLS:
        _stop(_POOLS.popitem()[1])


def _stop(ex):
    """Stop one pool's workers now."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    manager = getattr(ex, "_executor_manager_thread", None)  # shutdown() forgets it
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
    # the executor's manager thread closes its wakeup pipe once it sees the dead workers; left running, it
    # raced the interpreter's exit hook (concurrent.futures' _python_exit writes to that pipe): "OSError:
    # Bad file descriptor" after the one-line stop message, about every other SIGTERM / Ctrl-C
    if manager is not None:
        manager.join(30)
