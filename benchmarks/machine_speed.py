"""
A fixed CPU workload to read beside a wall-clock figure of this machine (the suite's, the main job's): the
2-core VM's speed drifts with its neighbours. The same tree's full suite took 1,343 and 1,592 CPU-s within
half an hour (session 24), and one pass of this workload read 0.58 and 1.04 CPU-s in the same hour. Run it
just before and just after a timing and report both readings with the timing.

    python benchmarks/machine_speed.py          # one line: CPU-s of the workload (lower is faster)
"""
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core's speed, as the suite's workers use
import numpy as np  # noqa: E402


def probe():
    """CPU seconds of a fixed mix: small BLAS matmuls (the analysis' fits) and a pure-Python loop (the
    interpreter's share of everything else)."""
    t = time.process_time()
    a = np.random.default_rng(0).random((300, 300))
    for _ in range(200):
        a = np.tanh(a @ a / 300)
    x = 0
    for i in range(3_000_000):
        x += i * i % 7
    return time.process_time() - t


def main():
    print(f"machine speed probe: {min(probe() for _ in range(3)):.2f} CPU-s (best of 3 passes; lower is faster)")


if __name__ == "__main__":
    main()
