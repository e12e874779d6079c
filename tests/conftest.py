"""Shared fixtures: real parts only (datasets' parquet loader, the bundled tokenizer, an S3 server on
127.0.0.1, synthetic stores written through the store module)."""
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

# OpenBLAS threads inside scipy's L-BFGS-B made every analysis fit 35-80x dearer in CPU on a 2-core machine
# (notes.md, session 19): one BLAS thread here and in every subprocess (analyze.main limits its own too)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Under pytest-xdist each worker has one of the cores (README's full command: 2 workers on 2): torch's default of
# one thread per core would put 4 spinning OpenMP threads on 2 cores. Set before torch is imported, so the
# in-process runs and the child scripts a test compares them with use the same one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUTPUTS = ROOT / "tests" / "outputs"

# Never talk to the real AWS, the instance-metadata address, wandb's servers or the HF hub.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["WANDB_MODE"] = "disabled"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import store as st  # noqa: E402


def one_line_error(main, argv, capsys, code=2):
    """Call a script's main(argv) expecting a user error: exit `code`, exactly one 'error: ' line on stderr,
    no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="session")
def outputs():
    """tests/outputs/: files written for a human to read (each by one test, so xdist's workers never share one)."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    return OUTPUTS


def built_once(tmp_path_factory, name, build):
    """tmp/<name>, built by build(path) once per test session and shared by pytest-xdist's workers (README's full
    command runs the suite on 2 of them): the first worker to ask builds it under a file lock while the other
    waits, then both read it (pytest-xdist's pattern for session fixtures). Without xdist: the session's tmp."""
    from filelock import FileLock  # a dependency of datasets
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's tmp root, above each worker's popen-gwN
    path, done = base / name, base / f"{name}.built"
    with FileLock(str(base / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)  # a half-built one, left by a worker whose build failed
            build(path)
            done.touch()
    return path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """For `-n 2 --dist loadgroup` (README's full command): a test that uses a module-scoped fixture of its own
    module runs on the same worker as the module's other such tests, so the fixture (a sweep, a trained run, a
    store) is built once, not once per worker; every other test goes to whichever worker is free. Slow tests
    are handed out first (longest first keeps both workers busy to the end, instead of one finishing a
    six-minute test alone); the order within each kind is the files' order."""
    grouped, slow_groups = set(), set()
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        defs = defs.name2fixturedefs if defs else {}
        if any(d[-1].scope == "module" for d in defs.values() if d):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
            grouped.add(item)
            if item.get_closest_marker("slow"):
                slow_groups.add(item.module.__name__)
    # a group with a slow test goes first whole: split, its module fixture was torn down between the halves and
    # built twice (a serial run: test_ngram's kn_store, test_hub_download's hub)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None and not (
        item in grouped and item.module.__name__ in slow_groups))


def tree_digest(root):
    """sha256 over the relative path and bytes of every file under root."""
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def read_only(root, name):
    """Yield root, then fail the session (a teardown error) if any file under it changed, appeared or went:
    session fixtures are shared by many tests, so a test that writes must copy first
    (shutil.copytree(root, tmp_path / ...)). Root ignores file modes, hence a digest, not chmod."""
    before = tree_digest(root)
    yield root
    assert tree_digest(root) == before, f"a test wrote into the shared fixture {name} ({root}): copy it first"


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory):
    """The shipped sample corpus, built once per session with the bundled tokenizer. Read-only."""
    import fetch_arxiv
    out = built_once(tmp_path_factory, "sample_store", lambda out: fetch_arxiv.main(
        ["--dataset_path", str(st.SAMPLE_CORPUS), "--full_dataset", "--output_dir", str(out)]))
    yield from read_only(out, "sample_store")


@pytest.fixture(scope="session")
def p1_analysis(tmp_path_factory):
    """The P1-shaped fabricated sweep (simulate.p1_sweep: the dilution law, noise seed 0, 295 runs) analysed
    once per session at --n_boot 100: (sweep root, fits.json as a dict, report.md). One analysis is ~20 s of
    CPU, so tests that only read it share it. Read-only."""
    import analyze
    import simulate

    def build(root):
        simulate.p1_sweep(root, noise_seed=0)
        analyze.main([str(root), "--n_boot", "100", "--no_baselines", "--jobs", "2"])
    root = built_once(tmp_path_factory, "p1_analysis", build)
    out = root / "analysis"
    fits, report = json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()
    for _ in read_only(root, "p1_analysis"):
        yield root, fits, report


def fits_intervals(obj, path=""):
    """Every [lo, hi] interval in a fits.json object (keys containing 'ci'), with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "ci" in str(k).lower() and isinstance(v, list) and len(v) == 2 and all(
                    isinstance(x, (int, float, str)) or x is None for x in v):
                yield f"{path}.{k}", v
            else:
                yield from fits_intervals(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from fits_intervals(v, f"{path}[{i}]")


def write_hub_copy(path, splits, label_feature="classlabel", shards=1):
    """Write {split: [(text, label), ...]} as parquet in the hub layout (train-00000-of-0000N.parquet)."""
    import datasets
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    label = (datasets.ClassLabel(names=st.CATEGORIES) if label_feature == "classlabel"
             else datasets.Value("int64"))
    feats = datasets.Features({"text": datasets.Value("string"), "label": label})
    for split, rows in splits.items():
        chunks = np.array_split(np.arange(len(rows)), shards)
        for k, idx in enumerate(chunks):
            part = [rows[i] for i in idx]
            ds = datasets.Dataset.from_dict({"text": [r[0] for r in part], "label": [r[1] for r in part]},
                                            features=feats)
            ds.to_parquet(str(path / f"{split}-{k:05d}-of-{shards:05d}.parquet"))
    return path


MARKOV_ALPHABET = 16
MARKOV_EPS = 0.1


def markov_entropy(eps=MARKOV_EPS, a=MARKOV_ALPHABET):
    """Entropy (nats) of one step of the synthetic Markov chain: the store's known loss floor."""
    p_main, p_other = 1 - eps + eps / a, eps / a
    return float(-(p_main * np.log(p_main) + (a - 1) * p_other * np.log(p_other)))


def make_synthetic_store(path, n_categories=3, papers_per_split=(8, 3, 3), length=(150, 600), seed=0,
                         kind="markov", lengths=None, vocab=None):
    """A store whose next-token entropy is known exactly.

    kind="markov": category c owns the token ids 1 + 16c .. 16 + 16c; each paper is a Markov chain in that
    alphabet: next = sigma_c(prev) with probability 1 - eps (+ eps/16), else uniform over the alphabet.
    The first token identifies the category, so every predicted token has entropy markov_entropy()
    (~0.565 nats at eps = 0.1): a model that learns the bigram table reaches that floor and cannot go below.
    kind="uniform": i.i.d. uniform tokens over 1..vocab-1: entropy ln(vocab - 1).
    lengths: optional explicit list of paper lengths per split (overrides papers_per_split/length).
    """
    rng = np.random.default_rng(seed)
    vocab = vocab or (1 + MARKOV_ALPHABET * n_categories)
    cats = st.CATEGORIES[:n_categories]
    with st.StoreWriter(path, cats) as w:
        for split, n in zip(st.SPLITS, papers_per_split):
            split_lengths = lengths or [int(rng.integers(length[0], length[1] + 1)) for _ in range(n * n_categories)]
            for i, L in enumerate(split_lengths):
                c = i % n_categories
                if kind == "uniform":
                    ids = rng.integers(1, vocab, size=L)
                else:
                    sigma = np.random.default_rng(100 + c).permutation(MARKOV_ALPHABET)
                    ids = np.empty(L, dtype=np.int64)
                    cur = int(rng.integers(MARKOV_ALPHABET))
                    for t in range(L):
                        ids[t] = 1 + MARKOV_ALPHABET * c + cur
                        cur = int(sigma[cur]) if rng.random() >= MARKOV_EPS else int(rng.integers(MARKOV_ALPHABET))
                w.add(split, c, ids, n_bytes=2 * L)
        meta = w.finish({"dataset": {"name": "synthetic", "config": kind, "revision": None, "path": None},
                         "tokenizer": {"name": "synthetic", "sha256": None, "vocab_size": vocab,
                                       "eos_token_id": 0},
                         "max_examples_per_split": None, "variant": {"synthetic": kind},
                         "variant_id": f"synthetic-{kind}"})
    return Path(path), meta


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """The 3-category Markov store (make_synthetic_store's defaults): the tiny runs' training data. Read-only."""
    path = built_once(tmp_path_factory, "synthetic_markov", make_synthetic_store)
    yield from read_only(path, "synthetic_store")


TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.json"


def free_port():
    """A port on 127.0.0.1 that nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10.0):
    """Block until a server accepts connections on 127.0.0.1:port."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a real HTTP S3 endpoint), with throwaway credentials."""
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment of a user with credentials and AWS_ENDPOINT_URL pointing at the local server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


# Real arXiv text (issue 20): the shipped subset, and the shared 22,000-paper corpus beside the clone when present
SUBSET_CORPUS = ROOT / "data" / "arxiv_abstracts_subset"
SHARED_ABSTRACTS = next((p for p in (ROOT.parent / "shared" / "data" / "arxiv-abstracts",
                                     Path("/work/shared/data/arxiv-abstracts")) if p.is_dir()), None)
# the pairs the KN pilot on the full corpus (EXPERIMENT_PLAN.md 6.1) found helping (cs<->cs: t > 0 both ways,
# cs.SY<-cs.NE and cs.CE<-cs.CV with intervals above 0) and interfering (math<->cs: t < 0, intervals below 0)
REAL_PAIRS_CS = [["cs.SY", "cs.NE"], ["cs.CV", "cs.CE"]]
REAL_PAIRS_MATH_CS = [["cs.NE", "math.GR"], ["math.AC", "cs.CE"]]


def run_kn_sweep(root, name, store, grid, fixed, n_boot, *extra):
    """Write a KN plan under root, run it through sweep.py run, analyse it (kn_sweep_result reads it); extra:
    more analyze.py flags."""
    import analyze
    import sweep
    plan = {"name": name, "script": "ngram.py", "store": store, "grid": grid,
            "fixed": {"order": 3, "sampling": "balanced", **fixed}, "gpus_per_run": 1}
    (root / "plan.json").write_text(json.dumps(plan, indent=1))
    sweep.main(["run", str(root / "plan.json"), "--out", str(root / "sweep"), "--parallel", "2"])
    analyze.main([str(root / "sweep"), "--n_boot", str(n_boot), "--no_baselines", "--jobs", "2", *extra])


def kn_sweep_result(root):
    """(sweep root, fits.json, report.md) of a sweep that run_kn_sweep built under root."""
    out = root / "sweep" / "analysis"
    return root / "sweep", json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()


@pytest.fixture(scope="session")
def real_kn_subset(tmp_path_factory):
    """A small KN sweep on the shipped real-text subset (260 training papers, ~52k tokens per category), built
    with the bundled tokenizer, analysed at --n_boot 100: (sweep root, fits.json, report.md). Budgets 16k /
    48k / 144k (4 / 12 / 36 steps of 40 windows) so K = 1 repeats its category ~2.8 times at 144k (the
    pilot's 864k: 2.9): the regime where the pilot's specialists' curves bend. K in {1, 2, 11} x subset seeds
    0-2, data-seed replicates (100, 101) of seed 0, and the pilot's helping / interfering pairs with their
    specialists at the same budgets. 75 runs (a KN run imports no torch: ~0.25 CPU-s each). Read-only."""
    budgets = [16000, 48000, 144000]
    pairs = REAL_PAIRS_CS + REAL_PAIRS_MATH_CS
    specialists = sorted({c for p in pairs for c in p})
    grid = [{"K": [1, 2, 11], "seed": [0, 1, 2], "token_budget": budgets},
            {"K": [1, 2, 11], "seed": [0], "data_seed": [100, 101], "token_budget": budgets},
            {"categories": [[c] for c in specialists] + pairs, "seed": [0], "token_budget": budgets}]

    def build(root):
        root.mkdir(parents=True)
        store = {"data_dir": str(root / "store"), "build": {"dataset_path": str(SUBSET_CORPUS), "full_dataset": True}}
        run_kn_sweep(root, "real_kn_subset", store, grid, {"batch_size": 40, "eval_windows": 64}, n_boot=100)
    sweep_root, fits, report = kn_sweep_result(built_once(tmp_path_factory, "real_kn_subset", build))
    for _ in read_only(sweep_root, "real_kn_subset"):
        yield sweep_root, fits, report


@pytest.fixture(scope="session")
def real_kn_full_k11(tmp_path_factory):
    """The KN pilot's K = 11 runs (plans/ngram_pilot_abstracts.yaml: subset seeds 0-10, 96k / 288k / 864k,
    batch 320) on the full shared corpus, analysed without a bootstrap: its noise floor pools 33 rotations
    of the one 11-category set (330 df); KN is deterministic, so it reproduces the pilot's runs bit for bit
    (floor 0.00408). Store build of 22,000 abstracts, 33 runs, a verdicts-only analysis. Skipped where the
    shared corpus is not beside the clone. Read-only."""
    if SHARED_ABSTRACTS is None:
        pytest.skip("the shared corpus ../shared/data/arxiv-abstracts is not here: the shipped subset's test split "
                    "(20 papers per category) is too small to measure the pilot's noise floor on")
    grid = [{"K": [11], "seed": list(range(11)), "token_budget": [96000, 288000, 864000]}]

    def build(root):
        root.mkdir(parents=True)
        store = {"data_dir": str(root / "store"), "build": {"dataset_path": str(SHARED_ABSTRACTS), "full_dataset": True}}
        # its test reads the noise floor only: no figures, mixing laws or further analyses (3 s of the fixture)
        run_kn_sweep(root, "real_kn_full_k11", store, grid, {"batch_size": 320, "eval_windows": 256}, 0, "--verdicts_only")
    sweep_root, fits, report = kn_sweep_result(built_once(tmp_path_factory, "real_kn_full_k11", build))
    for _ in read_only(sweep_root, "real_kn_full_k11"):
        yield sweep_root, fits, report
