"""What analyze.py says on stderr while it works: a line when a step that can take more than a few seconds
starts (a fit with its bootstrap, the cross-validation, the further analyses, the figures) and when it ends
with its time, the bootstrap's n/N at most every EVERY seconds, and each warning once. stdout keeps the
results (the summary, the verdicts, the files written), so a caller that reads them is not disturbed."""
import contextlib
import sys
import time
from pathlib import Path

EVERY = 5.0  # seconds between two bootstrap progress lines

_said = set()


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def warn_once(msg):
    """A warning printed once per analysis (library_warnings_once), however many fits or groups meet it."""
    if msg not in _said:
        _said.add(msg)
        say(f"warning: {msg}")


def warning_line(message, category, filename, lineno):
    """A library's warning (numpy, scipy, ...) as one line that names where it came from."""
    return f"{category.__name__} from {Path(filename).name}:{lineno}: {message}"


@contextlib.contextmanager
def library_warnings_once():
    """Python warnings raised while analyze.py runs reach stderr as warn_once's one line, once per message,
    not as the interpreter's two-line format with its source line (a bootstrap's "Mean of empty slice" was
    printed raw). Nothing is silenced: each distinct warning is said once. The bootstrap workers record
    theirs and the parent says them (analysis/workers.py's recording)."""
    import warnings
    # once per analysis, not per process: an in-process caller's second analysis (design.py's and
    # bench_calibration's simulations, the tests) said none of the warnings its first had said
    saved = set(_said)
    _said.clear()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                warn_once(warning_line(message, category, filename, lineno))
            yield
    finally:
        _said.clear()
        _said.update(saved)


class Step:
    """`with Step("fit dilution [all]"):` -- a start line, and the end line with the seconds it took."""

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        self.t0 = time.monotonic()
        say(f"{self.what} ...")
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            say(f"{self.what}: done in {time.monotonic() - self.t0:.1f} s")


class Counter:
    """The bootstrap's n/N: `tick(k)` after k more refits; a line at most every EVERY seconds and at the end."""

    def __init__(self, what, total):
        self.what, self.total, self.n = what, total, 0
        self.last = time.monotonic()

    def tick(self, k=1):
        self.n += k
        now = time.monotonic()
        if now - self.last >= EVERY or self.n >= self.total:
            self.last = now
            say(f"  {self.what}: {self.n}/{self.total}")
