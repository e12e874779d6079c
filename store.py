"""
The token store and the project's shared constants.

One module owns the on-disk format that fetch_arxiv.py writes and that the dataset, train.py and
evaluate.py read (see README.md, "The store format"). A store directory holds:

    tokens.bin    little-endian uint16, papers concatenated (train, validation, test; source row order),
                  each paper followed by one <|endoftext|> (id 0) separator that belongs to no span
    index.jsonl   line i: {"paper_id": i, "split", "label", "category", "offset", "length", "n_bytes", ...}
    splits.json   {"train": [paper_id, ...], "validation": [...], "test": [...]}
    meta.json     written last: its presence means the store is complete (manifest with sha256s, counts,
                  tokenizer, dataset, variant and store_id)

Also here: the project's constants (the 11 category names, the window, the validation seed) and die().
S3 sync of a store lives in s3sync.py; select_categories() in random_window_dataset.py.
"""
import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
# ccdv/arxiv-classification label names in the dataset's ClassLabel order.
CATEGORIES = ["math.AC", "cs.CV", "cs.AI", "cs.SY", "math.GR", "cs.CE", "cs.PL", "cs.IT", "cs.DS",
              "cs.NE", "math.ST"]
SPLITS = ("train", "validation", "test")
DATA_FILES = ("tokens.bin", "index.jsonl", "splits.json")
EOS_ID = 0  # <|endoftext|> in the GPT-NeoX-20B tokenizer; the only separator the format allows
WINDOW = 101                      # tokens per training/evaluation window: 100 predictions, <= 100 of context
PRED_PER_WINDOW = WINDOW - 1
EVAL_SEED = 1234                  # validation windows: the same in every run that trains on a category
TOKEN_DTYPE = np.dtype("<u2")

PROJECT_DIR = Path(__file__).resolve().parent
BUNDLED_TOKENIZER = PROJECT_DIR / "data" / "tokenizer" / "20B_tokenizer.json"
BUNDLED_TOKENIZER_SHA256 = "56ac4821e129d2c520fdaba60abd920fa852ada51b45c0dd52bbb6bd8c985ade"
SAMPLE_CORPUS = PROJECT_DIR / "data" / "sample_corpus"

class StoreError(Exception):
    """A user-facing problem with a store, a flag or a remote: the message is one actionable line."""


# ----------------------------------------------------------------------------------------------------
# hashing and atomic directory publication

def sha256_file(path, progress=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 22)
            if not chunk:
                break
            h.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return h.hexdigest()


def compute_store_id(file_hashes):
    """sha256 of "<sha tokens.bin>\\n<sha index.jsonl>\\n<sha splits.json>\\n": the store's identity."""
    text = "".join(file_hashes[name] + "\n" for name in DATA_FILES)
    return hashlib.sha256(text.encode()).hexdigest()


def temp_dir_beside(final_dir, tag="tmp"):
    """A fresh hidden directory next to final_dir (same filesystem, so a rename publishes it)."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.parent / f".{final_dir.name}.{tag}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    return tmp


def fsync_dir(path):
    """fsync a directory: makes the names created, renamed or removed in it durable (a rename is only
    durable once its directory is). Filesystems that cannot fsync a directory are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file below path, then every directory (deepest first): before the rename that publishes it."""
    path = Path(path)
    dirs = [path]
    for p in path.rglob("*"):
        if p.is_dir():
            dirs.append(p)
        elif p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in sorted(dirs, key=lambda d: -len(d.parts)):
        fsync_dir(d)


_RENAME_EXCHANGE = 2  # renameat2(2) flag (Linux >= 3.15): swap two paths atomically


def _exchange(a, b):
    """Atomically swap directories a and b; False where the system cannot (then two renames are used)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    return False  # EINVAL / ENOSYS / EOPNOTSUPP: a filesystem or kernel without RENAME_EXCHANGE


def publish_dir(tmp_dir, final_dir, fsync=True, after_swap=None):
    """Move a finished tmp_dir to final_dir, durably: its files and directories are fsync'd first, the
    parent after. Replacing an existing final_dir swaps the two atomically (renameat2 RENAME_EXCHANGE),
    so a kill at any moment leaves one complete final_dir (plus, at worst, a hidden temp dir that
    remove_stale() deletes). Where the swap is unsupported: two renames, and a kill between them leaves
    the old dir as .NAME.old-*, which restore_old_dirs() puts back at the next start. after_swap: called
    between the swap (or the first rename) and the removal of the old dir (fault-injection tests)."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if fsync:
        fsync_tree(tmp_dir)
    if final_dir.exists() and _exchange(tmp_dir, final_dir):
        fsync_dir(final_dir.parent)
        if after_swap:
            after_swap()
        shutil.rmtree(tmp_dir, ignore_errors=True)  # now the old contents
        return
    old = None
    if final_dir.exists():
        old = final_dir.parent / f".{final_dir.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(final_dir, old)
        if after_swap:
            after_swap()
    os.rename(tmp_dir, final_dir)
    if fsync:
        fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_no_space(e):
    """Whether an OSError says the disk (or the user's quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _human_bytes(n):
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} B"


def no_space_error(path):
    """A one-line StoreError for a full disk: the path being written and the space left where it lives."""
    p = Path(path)
    probe = next((q for q in (p, *p.parents) if q.exists()), Path("."))
    try:
        du = shutil.disk_usage(probe)
        free = f"{_human_bytes(du.free)} free of {_human_bytes(du.total)}"
    except OSError:
        free = "free space unknown"
    return StoreError(f"{path}: no space left on the device ({free} on the filesystem of {probe}); free some "
                      "space or write elsewhere")


def host_tag(tag):
    """A temp_dir_beside tag that names this host: clean_stale_temps then knows which leftovers are this
    host's (their pid can be checked) on a file system that several nodes share."""
    return f"{tag}-{re.sub(r'[^A-Za-z0-9]+', '', socket.gethostname()) or 'host'}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists under another user, or not a pid at all: leave the directory alone
    return True


def clean_stale_temps(final_dir, tags=("tmp", "download", "old")):
    """Remove what a killed writer left beside final_dir (.NAME.TAG-[HOST-]PID-NS directories): a temp dir
    whose process is gone can never become valid. Another host's leftovers are kept (its pids mean nothing
    here), as is every directory whose process still runs. Returns the paths removed."""
    final_dir = Path(final_dir)
    if not final_dir.parent.is_dir():
        return []
    here = host_tag("x")[2:]
    removed = []
    for tag in tags:
        for d in final_dir.parent.glob(f".{final_dir.name}.{tag}-*"):
            head, _, rest = d.name[len(f".{final_dir.name}."):].partition("-")
            parts = rest.split("-")
            if len(parts) < 2 or not parts[-2].isdigit():
                continue  # not a name temp_dir_beside / publish_dir made
            host = "-".join(parts[:-2])
            if (host and host != here) or _pid_alive(int(parts[-2])):
                continue
            if tag == "old" and not final_dir.exists():
                # a kill between publish_dir's two renames: this is the last complete final_dir, put it back
                os.rename(d, final_dir)
                continue
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
    return removed


def restore_old_dirs(parent):
    """Undo a replacement that a kill cut between its two renames: .NAME.old-* becomes NAME again where
    NAME is missing (the newest such), every other .*.old-* is removed. Returns the restored names."""
    restored = []
    # only names this code makes (.NAME.old-<pid>-<ns>, or .NAME.old-<ns>; ASCII digits): a stray .x.old-foo,
    # .x.old-foo-5 or .x.old-\u00b2 is someone else's, left alone (int() of '\u00b2', which isdigit(), raised)
    made = [(m, p) for p in Path(parent).glob(".*.old-*")
            if (m := re.fullmatch(r"\.(.+)\.old-(?:[0-9]+-)?([0-9]+)", p.name))]
    for m, old in sorted(made, key=lambda mp: int(mp[0].group(2)), reverse=True):
        name = m.group(1)
        if not (Path(parent) / name).exists():
            os.rename(old, Path(parent) / name)
            restored.append(name)
        else:
            shutil.rmtree(old, ignore_errors=True)
    return restored


def write_json_atomic(path, obj, indent=None):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk (or a kill signal) leaves no half-written .tmp behind
        raise
    fsync_dir(path.parent)


# ----------------------------------------------------------------------------------------------------
# writer

class StoreWriter:
    """Streams papers into a temporary directory; finish() writes the manifest and renames it into place.

    Papers must arrive split by split (train, then validation, then test). Nothing is held in memory
    but the per-paper index rows' counters: tokens go straight to disk and into a running sha256.
    """

    def __init__(self, final_dir, categories, separator=True):
        self.final_dir = Path(final_dir)
        self.categories = list(categories)
        self.separator = bool(separator)
        self.tmp = temp_dir_beside(self.final_dir, tag=host_tag("tmp"))
        self._tok_f = open(self.tmp / "tokens.bin", "wb")
        self._idx_f = open(self.tmp / "index.jsonl", "wb")
        self._tok_h, self._idx_h = hashlib.sha256(), hashlib.sha256()
        self._sep = np.array([EOS_ID], dtype=TOKEN_DTYPE).tobytes()
        self.n_tokens_written = 0  # including separators
        self.splits = {s: [] for s in SPLITS}
        self.counts = {s: {"papers": 0, "tokens": 0, "bytes": 0} for s in SPLITS}
        self.category_counts = {c: {s: {"papers": 0, "tokens": 0, "bytes": 0} for s in SPLITS}
                                for c in self.categories}
        self._split_pos = 0
        self._closed = False

    def add(self, split, label, ids, n_bytes, **extra):
        try:
            return self._add(split, label, ids, n_bytes, **extra)
        except OSError as e:
            if is_no_space(e):
                self.abort()  # first make room: the message then says what is really free
                raise no_space_error(self.final_dir) from None
            raise

    def _add(self, split, label, ids, n_bytes, **extra):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        pos = SPLITS.index(split)
        if pos < self._split_pos:
            raise ValueError("papers must be added split by split: train, validation, test")
        self._split_pos = pos
        if not 0 <= int(label) < len(self.categories):
            raise StoreError(f"label {label} is outside 0..{len(self.categories) - 1}")
        arr = np.asarray(ids)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(TOKEN_DTYPE).max):
            raise StoreError("a token id does not fit uint16; the store format needs a vocabulary <= 65536")
        data = arr.astype(TOKEN_DTYPE, copy=False).tobytes()
        self._tok_f.write(data)
        self._tok_h.update(data)
        paper_id = sum(len(v) for v in self.splits.values())
        row = {"paper_id": paper_id, "split": split, "label": int(label),
               "category": self.categories[int(label)], "offset": self.n_tokens_written,
               "length": int(arr.size), "n_bytes": int(n_bytes), **extra}
        self.n_tokens_written += int(arr.size)
        if self.separator:
            self._tok_f.write(self._sep)
            self._tok_h.update(self._sep)
            self.n_tokens_written += 1
        line = (json.dumps(row) + "\n").encode()
        self._idx_f.write(line)
        self._idx_h.update(line)
        self.splits[split].append(paper_id)
        for c in (self.counts[split], self.category_counts[row["category"]][split]):
            c["papers"] += 1
            c["tokens"] += row["length"]
            c["bytes"] += row["n_bytes"]
        return paper_id

    def finish(self, meta_extra):
        """Write splits.json and meta.json (last), fsync, and publish. Returns the final meta dict."""
        try:
            return self._finish(meta_extra)
        except OSError as e:
            if is_no_space(e):
                self.abort()  # first make room: the message then says what is really free
                raise no_space_error(self.final_dir) from None
            raise

    def _finish(self, meta_extra):
        for f in (self._tok_f, self._idx_f):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._closed = True
        splits_bytes = (json.dumps(self.splits) + "\n").encode()
        (self.tmp / "splits.json").write_bytes(splits_bytes)
        hashes = {"tokens.bin": self._tok_h.hexdigest(), "index.jsonl": self._idx_h.hexdigest(),
                  "splits.json": hashlib.sha256(splits_bytes).hexdigest()}
        files = {n: {"bytes": (self.tmp / n).stat().st_size, "sha256": hashes[n]} for n in DATA_FILES}
        meta = {"format_version": FORMAT_VERSION, "dtype": "uint16", "categories": self.categories,
                "separator_token_id": EOS_ID if self.separator else None,
                "n_tokens_total": self.n_tokens_written,
                "counts": self.counts, "category_counts": self.category_counts,
                **meta_extra, "files": files, "store_id": compute_store_id(hashes)}
        meta.setdefault("max_examples_per_split", None)
        write_json_atomic(self.tmp / "meta.json", meta, indent=1)
        publish_dir(self.tmp, self.final_dir)
        return meta

    def abort(self):
        if not self._closed:
            self._closed = True
            for f in (self._tok_f, self._idx_f):
                try:
                    f.close()
                except OSError:
                    pass  # the buffered tail cannot be written (a full disk): the directory goes anyway
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


# ----------------------------------------------------------------------------------------------------
# reader

def read_meta(data_dir):
    """meta.json of a complete store, or None when the directory holds no complete store."""
    p = Path(data_dir) / "meta.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{p}: unreadable meta.json ({e}); rebuild the store with fetch_arxiv.py --force") from None


def check_files(data_dir, meta, verify_sha256=False, progress=False):
    """Compare the data files with the manifest: sizes always, sha256 when asked. Raises StoreError."""
    data_dir = Path(data_dir)
    for name in DATA_FILES:
        spec = meta.get("files", {}).get(name)
        path = data_dir / name
        if spec is None:
            raise StoreError(f"{data_dir}/meta.json: the manifest has no entry for {name}")
        if not path.is_file():
            raise StoreError(f"{path}: missing; the store is incomplete, rebuild it with fetch_arxiv.py --force")
        size = path.stat().st_size
        if size != spec["bytes"]:
            raise StoreError(f"{path}: {size} bytes but meta.json says {spec['bytes']}; the store is "
                             "corrupt, rebuild it with fetch_arxiv.py --force")
        if verify_sha256:
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {name}", leave=False)
            digest = sha256_file(path, bar)
            if bar is not None:
                bar.close()
            if digest != spec["sha256"]:
                raise StoreError(f"{path}: sha256 {digest[:16]}... does not match meta.json "
                                 f"({spec['sha256'][:16]}...); the store is corrupt")


class Store:
    """A complete token store opened for reading.

    tokens: np.memmap (or an in-RAM array with in_memory=True) of uint16.
    The index is kept as numpy arrays (offset, length, label, split_code, n_bytes), never as a list of
    dicts, so forked DataLoader workers share it instead of copying it on every refcount touch.
    """

    def __init__(self, data_dir, verify=False, in_memory=False):
        self.dir = Path(data_dir)
        if not self.dir.is_dir():
            raise StoreError(f"{self.dir}: no such store directory; build one with fetch_arxiv.py "
                             "(see README.md)")
        meta = read_meta(self.dir)
        if meta is None:
            raise StoreError(f"{self.dir}: no meta.json, so not a complete token store; build it with "
                             "fetch_arxiv.py")
        if meta.get("format_version") != FORMAT_VERSION or meta.get("dtype") != "uint16":
            raise StoreError(f"{self.dir}/meta.json: format_version {meta.get('format_version')} / dtype "
                             f"{meta.get('dtype')} is not the supported {FORMAT_VERSION} / uint16")
        check_files(self.dir, meta, verify_sha256=verify)
        self.meta = meta
        self.categories = list(meta["categories"])
        self.store_id = meta["store_id"]
        tok_path = self.dir / "tokens.bin"
        if in_memory:
            self.tokens = np.fromfile(tok_path, dtype=TOKEN_DTYPE)
        elif tok_path.stat().st_size == 0:
            self.tokens = np.zeros(0, dtype=TOKEN_DTYPE)  # np.memmap refuses empty files
        else:
            self.tokens = np.memmap(tok_path, dtype=TOKEN_DTYPE, mode="r")
        self._load_index()

    def _load_index(self):
        rows = []
        with open(self.dir / "index.jsonl") as f:
            for i, line in enumerate(f):
                r = json.loads(line)
                if r["paper_id"] != i:
                    raise StoreError(f"{self.dir}/index.jsonl line {i + 1}: paper_id {r['paper_id']} != {i}")
                rows.append((r["offset"], r["length"], r["label"], SPLITS.index(r["split"]), r["n_bytes"]))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self.offset, self.length, self.label, self.split_code, self.n_bytes = (arr[:, j].copy() for j in range(5))
        self.label = self.label.astype(np.int32)
        self.split_code = self.split_code.astype(np.int8)
        if len(arr) and int((self.offset + self.length).max()) > len(self.tokens):
            raise StoreError(f"{self.dir}/index.jsonl: a span runs past the end of tokens.bin; the store is corrupt")
        if len(arr) and (self.label.min() < 0 or self.label.max() >= len(self.categories)):
            raise StoreError(f"{self.dir}/index.jsonl: a label is outside the {len(self.categories)} categories")
        splits = json.loads((self.dir / "splits.json").read_text())
        self.splits = {s: np.asarray(splits.get(s, []), dtype=np.int64) for s in SPLITS}

    # --- metadata
    @property
    def n_papers(self):
        return len(self.offset)

    @property
    def vocab_size(self):
        """Size of the tokenizer's vocabulary (ids are < this), from the manifest."""
        tok = self.meta.get("tokenizer") or {}
        if tok.get("vocab_size"):
            return int(tok["vocab_size"])
        return int(self.tokens.max()) + 1 if len(self.tokens) else 1

    @property
    def tag_token_base(self):
        """Tagged runs: category c's tag is the token id tag_token_base + label(c), just above the tokenizer's
        ids (Pythia's 50304-row embedding has 27 unused rows above the tokenizer's 50277)."""
        return self.vocab_size

    @property
    def tokenizer_sha256(self):
        return (self.meta.get("tokenizer") or {}).get("sha256")

    def category_ids(self, names):
        """Label ids for category names; an unknown name is a StoreError listing the valid ones."""
        ids = []
        for n in names:
            if n not in self.categories:
                raise StoreError(f"unknown category {n!r}; valid names: {' '.join(self.categories)}")
            ids.append(self.categories.index(n))
        return ids

    def papers(self, split, categories=None):
        """Paper ids of a split (index order), optionally restricted to category names."""
        if split not in SPLITS:
            raise StoreError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        ids = self.splits[split]
        if categories is not None:
            ids = ids[np.isin(self.label[ids], self.category_ids(categories))]
        return ids

    def paper_tokens(self, paper_id):
        o, n = int(self.offset[paper_id]), int(self.length[paper_id])
        return self.tokens[o:o + n]


def fmt_count(v):
    """2000 -> 2k, 90000000 -> 90M, 1.5e6 -> 1.5M: readable, stable name fragments (run ids and names)."""
    v = float(v)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suf}"
    return f"{v:g}"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every script's --help: each flag's default shown, the docstring's layout kept."""


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser: a usage mistake is one line on stderr (`error: argument --flag: ...`) and
    exit 2, as every other user error, not the usage block followed by the message."""

    def error(self, message):
        die(f"{message} (see {self.prog} --help)")


def number(kind=float, lo=None, hi=None, lo_open=False, hi_open=False, off=None):
    """An argparse type: a finite int or float in [lo, hi] (an open end with lo_open / hi_open; None: no
    bound). off: a word (e.g. "off") that gives None. A value outside is refused at parse time, in one
    line naming the flag and the range (see ArgumentParser)."""
    what = "an integer" if kind is int else "a number"
    g = lambda x: str(x) if isinstance(x, int) else f"{x:g}"  # an int bound exactly (2**64 - 1, not 1.84467e+19)
    if lo is not None and hi is not None:
        rng = f"in {'(' if lo_open else '['}{g(lo)}, {g(hi)}{')' if hi_open else ']'}"
    elif lo is not None:
        rng = f"{'>' if lo_open else '>='} {g(lo)}"
    elif hi is not None:
        rng = f"{'<' if hi_open else '<='} {g(hi)}"
    else:
        rng = ""
    desc = " ".join(x for x in (what, rng) if x) + (f" (or {off})" if off else "")

    def parse(text):
        if off is not None and str(text).strip().lower() == off:
            return None
        try:
            v = kind(text) if kind is not int else int(str(text), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {desc}, got {text!r}") from None
        ok = (v == v and abs(v) != float("inf")
              and (lo is None or (v > lo if lo_open else v >= lo))
              and (hi is None or (v < hi if hi_open else v <= hi)))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {desc}, got {text}")
        return v

    parse.__name__ = desc
    return parse


STOPPED_EXITS = (130, 143)  # the exit codes of a script stopped by Ctrl-C / SIGTERM that says so itself


def silence_finalizer_errors():
    """For a process ending on Ctrl-C / SIGTERM: a stop can land inside a constructor (tqdm's, during a build
    or an evaluation), and the half-built object's __del__ then fails when it is collected, so Python would
    print "Exception ignored ... Traceback" after the one-line message. Such finalizer errors are only noise
    once the process is ending on the user's request. Only cli() calls it: a main() called in process
    (tests, design.py) returns to a caller that goes on, whose own hook (pytest's) must stay."""
    sys.unraisablehook = lambda unraisable: None


def cli(main):
    """Run a script's main() from the shell: output piped into a reader that leaves early (`| head`) ends
    quietly, and Ctrl-C ends in one line (exit 130) instead of a traceback. Scripts with work to save on
    Ctrl-C (train.py, sweep.py) handle it themselves first."""
    try:
        main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
    except KeyboardInterrupt:
        silence_finalizer_errors()
        print("interrupted (Ctrl-C); nothing half-written is left behind", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as e:  # a script that handled the stop itself (train.py, sweep.py, analyze.py) and said so
        if e.code in STOPPED_EXITS:
            silence_finalizer_errors()
        raise


def die(msg, code=2):
    """One line on stderr and a non-zero exit: the way every script reports a user's mistake."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)
