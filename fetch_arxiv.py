"""
Download ccdv/arxiv-classification, tokenize it with the Pythia (GPT-NeoX-20B) tokenizer and write a
token store (see store.py for the format), optionally syncing it with S3.

Dev run (50 papers per split, covering all 11 categories):
    python fetch_arxiv.py
Offline, on the shipped sample corpus or any local copy in the hub's parquet layout:
    python fetch_arxiv.py --dataset_path data/sample_corpus --output_dir preprocessed_sample
Full run, shared through S3:
    python fetch_arxiv.py --full_dataset --upload_to_s3 --s3_bucket my-bucket

How the dev subset is chosen (--max_examples_per_split N): each split is read in source row order and
category c (label order) gets a quota of N // C papers, plus one for the first N % C categories (C = the
number of categories); a row is taken while its category's quota is not full. If the split runs out
before N rows are taken (a category is rare or absent), the earliest rows that were passed over fill the
remaining places. So the subset is deterministic, and with N >= C it holds every category present in
the split. The chosen rows keep their source order in the store. Dev runs stream the source, so only the
rows read are downloaded.
"""
import collections
import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np

import s3sync
import store as st

DEFAULT_DATASET = "ccdv/arxiv-classification"
DEFAULT_CONFIG = "no_ref"
TEXT_BATCH_BYTES = 2 << 20  # tokenizer work unit: ~2 MB of text (a few dozen papers); bounds memory


def parse_args(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                          allow_abbrev=False)
    src = p.add_argument_group("source")
    src.add_argument("--dataset_name", default=DEFAULT_DATASET, help="hub dataset id")
    src.add_argument("--dataset_config", default=DEFAULT_CONFIG, help="hub config (no_ref drops the class strings)")
    src.add_argument("--dataset_revision", default=None,
                     help="hub commit to pin (for a script dataset: a commit of its parquet conversion; "
                          "meta.json's dataset.revision names the one a store was read from)")
    src.add_argument("--dataset_path", default=None,
                     help="local copy in the hub layout (train-*.parquet, validation-*.parquet, test-*.parquet); "
                          "used instead of the hub")
    src.add_argument("--tokenizer", default=None,
                     help="tokenizer.json file or hub id (default: the bundled Pythia tokenizer)")
    size = p.add_argument_group("size")
    size.add_argument("--max_examples_per_split", type=st.number(int, 1), default=50,
                      help="dev runs: a deterministic, category-covering subset of N papers per split")
    size.add_argument("--full_dataset", action="store_true", help="every paper (ignores --max_examples_per_split)")
    out = p.add_argument_group("output")
    out.add_argument("--output_dir", default="preprocessed_arxiv", help="the store directory to write")
    out.add_argument("--num_proc", type=st.number(int, 1), default=1,
                     help="tokenizer processes; 1 = one process using the tokenizer's own threads")
    out.add_argument("--force", action="store_true",
                     help="rebuild even if a complete store of this variant exists; with --upload_to_s3, also "
                          "replace a published store of another store_id; with --download_from_s3, replace a "
                          "local store that differs from the published one")
    s3 = p.add_argument_group("S3")
    s3.add_argument("--upload_to_s3", action="store_true", help="upload the store after a successful build")
    s3.add_argument("--download_from_s3", action="store_true",
                    help="use the remote store of this variant if there is one; build locally otherwise")
    s3.add_argument("--download_only", action="store_true",
                    help="compute nodes: fetch the published store and never build (one-line error if it is "
                         "missing); with --s3_prefix, whatever variant is published there is taken")
    s3.add_argument("--s3_bucket", default=os.environ.get("S3_BUCKET"), help="bucket (default: $S3_BUCKET)")
    s3.add_argument("--s3_prefix", default=None, help="used verbatim; default encodes the variant")
    s3.add_argument("--s3_endpoint_url", default=None, help="S3-compatible endpoint (also AWS_ENDPOINT_URL)")
    args = p.parse_args(argv)
    if args.full_dataset:
        args.max_examples_per_split = None
    if args.download_only:
        args.download_from_s3 = True
    if (args.upload_to_s3 or args.download_from_s3) and not args.s3_bucket:
        st.die("--upload_to_s3/--download_from_s3/--download_only need --s3_bucket (or S3_BUCKET)")
    return args


# ----------------------------------------------------------------------------------------------------
# tokenizer

def load_tokenizer(spec):
    """(PreTrainedTokenizerFast, info dict). A raw tokenizer.json has no eos_token: we set it."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    if spec is None or Path(spec).is_file():
        path = Path(spec) if spec else st.BUNDLED_TOKENIZER
        try:
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
        except Exception as e:
            st.die(f"--tokenizer {path}: not a tokenizers JSON file ({type(e).__name__}: {e})")
        sha = st.sha256_file(path)
        name = "bundled:EleutherAI/gpt-neox-20b" if spec is None else str(path)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec)
        except Exception as e:
            st.die(f"--tokenizer {spec}: neither a file nor a loadable hub tokenizer ({type(e).__name__})")
        if not getattr(tok, "is_fast", False):
            st.die(f"--tokenizer {spec}: a fast (Rust) tokenizer is needed")
        sha = hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()
        name = spec
    backend = tok.backend_tokenizer
    vocab_size = backend.get_vocab_size(with_added_tokens=True)
    if vocab_size > 65536:
        st.die(f"--tokenizer {spec}: vocabulary of {vocab_size} ids does not fit the store's uint16 tokens "
               "(<= 65536)")
    eos = backend.token_to_id("<|endoftext|>")
    if tok.eos_token is None and eos is not None:
        tok.eos_token = "<|endoftext|>"
    info = {"name": name, "sha256": sha, "vocab_size": vocab_size,
            "eos_token_id": tok.eos_token_id}
    return tok, info


_WORKER_TOK = None


def _worker_init(tok_json):
    global _WORKER_TOK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process; avoids fork deadlocks
    from tokenizers import Tokenizer
    _WORKER_TOK = Tokenizer.from_str(tok_json)


def _encode(texts, tok=None):
    """Token ids of each text, as given (no special tokens added), as uint16 arrays."""
    enc = (tok or _WORKER_TOK).encode_batch(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.uint16) for e in enc]


def encode_ordered(batches, backend, num_proc):
    """Yield (payload, ids_list) per batch, in input order, with at most 2*num_proc batches in flight.

    Ordered output is what makes tokens.bin byte-identical whatever num_proc is; the bounded window is
    what keeps memory flat (Pool.imap would read the whole input ahead).
    """
    if num_proc == 1:
        for payload, texts in batches:
            yield payload, _encode(texts, backend)
        return
    import multiprocessing as mp
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(num_proc, initializer=_worker_init, initargs=(backend.to_str(),)) as pool:
        inflight = collections.deque()
        for payload, texts in batches:
            inflight.append((payload, pool.apply_async(_encode, (texts,))))
            if len(inflight) >= 2 * num_proc:
                pl, res = inflight.popleft()
                yield pl, res.get()
        while inflight:
            pl, res = inflight.popleft()
            yield pl, res.get()


# ----------------------------------------------------------------------------------------------------
# source

def variant_of(args, tok_info):
    """What makes two stores interchangeable. Stored in meta.json; compared on reuse and on S3."""
    source = f"path:{Path(args.dataset_path).name}" if args.dataset_path else args.dataset_name
    return {"dataset": source, "config": None if args.dataset_path else args.dataset_config,
            "revision": None if args.dataset_path else args.dataset_revision,
            "max_examples_per_split": args.max_examples_per_split, "tokenizer_sha256": tok_info["sha256"]}


def variant_id(v):
    size = "full" if v["max_examples_per_split"] is None else f"max{v['max_examples_per_split']}"
    parts = [v["config"] or "local", size, f"tok{v['tokenizer_sha256'][:12]}"]
    if v["revision"]:
        parts.append(f"rev{v['revision'][:12]}")
    return "-".join(parts)


def default_s3_prefix(v):
    slug = re.sub(r"[^A-Za-z0-9._-]+", "__", v["dataset"])
    return f"arxiv-ergodic-scaling/{slug}/{variant_id(v)}"


PARQUET_REVISION = "refs/convert/parquet"  # the hub's automatic parquet conversion of a dataset
HUB_TIMEOUT_S = 10  # per request to the hub's API: an unreachable hub is reported within ~30 s


def _hub_fail(e, args):
    """A one-line message for an error of the hub's API (None: not a hub error, a bug: let it propagate)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    where = constants.ENDPOINT
    if isinstance(e, RevisionNotFoundError):
        return (f"--dataset_revision {args.dataset_revision}: no such branch, tag or commit in "
                f"{args.dataset_name} on {where}")
    if isinstance(e, GatedRepoError):
        return f"--dataset_name {args.dataset_name}: gated on {where}; accept its terms and log in (hf auth login)"
    if isinstance(e, RepositoryNotFoundError):
        return (f"--dataset_name {args.dataset_name}: no such dataset repository on {where} (a private one needs "
                "hf auth login); check the id, or use --dataset_path with a local copy")
    if isinstance(e, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so the hub cannot be asked; unset it, or use --dataset_path with a local copy"
    if isinstance(e, HfHubHTTPError):
        return f"the hub at {where} answered {type(e).__name__}: {str(e).splitlines()[0]}"
    name = type(e).__name__
    if isinstance(e, (ConnectionError, TimeoutError)) or any(w in name for w in ("Connect", "Timeout", "Network")):
        return (f"the hub at {where} is unreachable ({name}); check the network or HF_ENDPOINT, or use "
                "--dataset_path with a local copy (or --download_from_s3 for a published store)")
    return None


def resolve_hub_source(args):
    """Decide how the hub dataset is read, before any data is: ask the hub for the repository at the
    requested revision (default main) and return (load_dataset args, kwargs, commit sha read).

    - a repository in the layout of the hub's parquet conversion ({config}/{split}/*.parquet) is read as
      exactly those files of the config, at the resolved commit (a pinned conversion commit lands here);
    - a script dataset (a loading .py at the top, which datasets >= 4 will not run) is read from its parquet
      conversion, refs/convert/parquet, resolved to its commit first;
    - anything else (a parquet upload with configs in its card, another hub id) goes to plain load_dataset.
    The explicit file list matters: load_dataset(repo, revision=refs/convert/parquet) would see one config
    ('default') in the branch, and without name= its split patterns mix both configs' folders.
    """
    from huggingface_hub import HfApi
    api = HfApi()
    name, config = args.dataset_name, args.dataset_config

    def info(revision):
        try:
            return api.dataset_info(name, revision=revision, timeout=HUB_TIMEOUT_S)
        except Exception as e:
            msg = _hub_fail(e, args)
            if msg is None:
                raise
            if revision == PARQUET_REVISION and "RevisionNotFound" in type(e).__name__:
                msg = (f"{name} is a script dataset (datasets >= 4 cannot run it) and the hub has no parquet "
                       f"conversion of it ({PARQUET_REVISION}); pip install 'datasets<4' for the fetch step, or "
                       "use --dataset_path with a local parquet copy")
            st.die(msg)

    def conversion_files(files):
        return {s: sorted(f for f in files if f.startswith(f"{config}/{s}/") and f.endswith(".parquet"))
                for s in st.SPLITS}

    repo = info(args.dataset_revision)
    files = [s.rfilename for s in repo.siblings or []]
    converted = conversion_files(files)
    is_script = any("/" not in f and f.endswith(".py") for f in files)
    if not any(converted.values()) and is_script:
        if args.dataset_revision:
            st.die(f"--dataset_revision {args.dataset_revision}: that commit of {name} holds a loading script, which "
                   f"datasets >= 4 cannot run; pin a commit of its parquet conversion ({PARQUET_REVISION}) instead")
        print(f"{name} is a script dataset, which datasets >= 4 cannot run; reading its parquet conversion "
              f"({PARQUET_REVISION})", flush=True)
        repo = info(PARQUET_REVISION)
        files = [s.rfilename for s in repo.siblings or []]
        converted = conversion_files(files)
        if not any(converted.values()):
            configs = sorted({f.split("/")[0] for f in files if f.endswith(".parquet")})
            st.die(f"--dataset_config {config}: not in the parquet conversion of {name} (configs there: "
                   f"{', '.join(configs) or 'none'})")
    if any(converted.values()):
        missing = [s for s, f in converted.items() if not f]
        if missing:
            st.die(f"{name}@{repo.sha[:12]}: the parquet conversion of config {config} has no split(s) "
                   f"{', '.join(missing)}")
        data_files = {s: [f"hf://datasets/{name}@{repo.sha}/{f}" for f in fs] for s, fs in converted.items()}
        print(f"reading {name} config {config} at commit {repo.sha} "
              f"({sum(map(len, data_files.values()))} parquet files)", flush=True)
        return "parquet", {"data_files": data_files}, repo.sha
    return name, {"name": config, "revision": repo.sha}, repo.sha


def load_source(args):
    """({split: IterableDataset or Dataset}, category names, hub commit read or None), via load_dataset.

    Dev runs and local copies stream (no full download, no Arrow cache); a full hub run downloads once
    into the datasets cache, which survives a network hiccup better than a 1.9 GB stream.
    """
    import datasets
    streaming = args.max_examples_per_split is not None or args.dataset_path is not None
    revision = None
    if args.dataset_path:
        if not Path(args.dataset_path).is_dir():
            st.die(f"--dataset_path {args.dataset_path}: no such directory")
        files = {s: sorted(str(f) for f in Path(args.dataset_path).glob(f"{s}-*.parquet")) for s in st.SPLITS}
        missing = [s for s, f in files.items() if not f]
        if missing:
            st.die(f"--dataset_path {args.dataset_path}: no {', '.join(s + '-*.parquet' for s in missing)} "
                   "(the hub layout is needed)")
        target, kwargs = args.dataset_path, {}
    else:
        target, kwargs, revision = resolve_hub_source(args)
    where = args.dataset_path or args.dataset_name
    try:
        ds = datasets.load_dataset(target, streaming=streaming, **kwargs)
    except Exception as e:
        msg = None if args.dataset_path else _hub_fail(e, args)
        if msg is None:
            first = str(e).splitlines()[0] if str(e) else ""
            msg = f"could not load dataset {where!r} ({type(e).__name__}: {first})"
            if "scripts are no longer supported" in str(e):
                msg += "; pip install 'datasets<4' for the fetch step, or use --dataset_path with a local copy"
        st.die(msg)
    missing = [s for s in st.SPLITS if s not in ds]
    if missing:
        st.die(f"dataset {where!r} has no split(s) {', '.join(missing)}")
    feats = ds["train"].features
    if feats is None or "text" not in feats or "label" not in feats:
        st.die(f"dataset {where!r}: features 'text' and 'label' are needed, found {list(feats or {})}")
    label_names = getattr(feats["label"], "names", None) or list(st.CATEGORIES)
    return ds, list(label_names), revision


def split_rows(ds_split, max_n, n_categories, split, where):
    """Yield (row_index, text, label) in source order: all rows, or the dev subset (see module doc)."""
    def rows():
        for i, ex in enumerate(ds_split):
            label = ex["label"]
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < n_categories:
                raise st.StoreError(f"{where}: {split} row {i}: label {label!r} is not an integer in "
                                    f"0..{n_categories - 1}")
            text = ex["text"]
            if text is not None and not isinstance(text, str):
                raise st.StoreError(f"{where}: {split} row {i}: text is {type(text).__name__}, not a string")
            yield i, text or "", int(label)

    if max_n is None:
        yield from rows()
        return
    quota = [max_n // n_categories + (1 if c < max_n % n_categories else 0) for c in range(n_categories)]
    taken, passed_over = [], []
    for i, text, label in rows():
        if quota[label] > 0:
            quota[label] -= 1
            taken.append((i, text, label))
            if len(taken) == max_n:
                break
        elif len(passed_over) < max_n:
            passed_over.append((i, text, label))
    if len(taken) < max_n:  # the split ran out: the earliest passed-over rows fill the places left
        taken += passed_over[:max_n - len(taken)]
        taken.sort()
    yield from taken


def batched(rows, split):
    """Group (row, text, label) into ~TEXT_BATCH_BYTES units of work for the tokenizer."""
    buf, nbytes = [], 0
    for r in rows:
        buf.append(r)
        nbytes += len(r[1])
        if nbytes >= TEXT_BATCH_BYTES or len(buf) >= 4096:
            yield (split, buf), [t for _, t, _ in buf]
            buf, nbytes = [], 0
    if buf:
        yield (split, buf), [t for _, t, _ in buf]


# ----------------------------------------------------------------------------------------------------
# build

def build_store(args, tok, tok_info, variant):
    from tqdm import tqdm
    ds, label_names, revision_used = load_source(args)
    where = args.dataset_path or args.dataset_name
    backend = tok.backend_tokenizer
    separator = tok_info["eos_token_id"] == st.EOS_ID  # the format allows only <|endoftext|> = 0 between papers
    t0 = time.time()
    with st.StoreWriter(args.output_dir, label_names, separator=separator) as w:
        def all_batches():
            for split in st.SPLITS:
                total = args.max_examples_per_split
                if total is None:
                    try:
                        total = ds[split].info.splits[split].num_examples
                    except Exception:
                        total = None
                with tqdm(total=total, unit="paper", desc=f"tokenize {split}") as bar:
                    for payload, texts in batched(split_rows(ds[split], args.max_examples_per_split,
                                                             len(label_names), split, where), split):
                        yield payload, texts
                        bar.update(len(texts))

        for (split, rows), ids_list in encode_ordered(all_batches(), backend, args.num_proc):
            for (row, text, label), ids in zip(rows, ids_list):
                w.add(split, label, ids, len(text.encode("utf-8")), source_row=row)
        if sum(w.counts[s]["papers"] for s in st.SPLITS) == 0:
            raise st.StoreError(f"{where}: the source has no rows; nothing to store")
        dataset_info = {"name": args.dataset_name if not args.dataset_path else None,
                        "config": args.dataset_config if not args.dataset_path else None,
                        "revision": revision_used,  # the commit read: names the exact bytes
                        "requested_revision": args.dataset_revision if not args.dataset_path else None,
                        "path": str(Path(args.dataset_path).resolve()) if args.dataset_path else None}
        meta = w.finish({"dataset": dataset_info, "tokenizer": tok_info,
                         "max_examples_per_split": args.max_examples_per_split,
                         "variant": variant, "variant_id": variant_id(variant),
                         "created_unix": int(time.time())})
    wall = time.time() - t0
    return meta, wall


def print_summary(meta, wall=None):
    print(f"\nstore {meta['store_id'][:16]}  variant {meta.get('variant_id')}")
    print(f"{'':12s} {'papers':>8s} {'tokens':>14s} {'bytes':>15s} {'bytes/tok':>9s}")
    for s in st.SPLITS:
        c = meta["counts"][s]
        print(f"{s:12s} {c['papers']:8,d} {c['tokens']:14,d} {c['bytes']:15,d} "
              f"{c['bytes'] / max(c['tokens'], 1):9.2f}")
    print(f"\n{'category':10s} " + " ".join(f"{s + ' papers/tokens':>26s}" for s in st.SPLITS))
    for cat, per in meta["category_counts"].items():
        print(f"{cat:10s} " + " ".join(f"{per[s]['papers']:9,d} / {per[s]['tokens']:14,d}" for s in st.SPLITS))
    if wall is not None:
        n_tok = sum(meta["counts"][s]["tokens"] for s in st.SPLITS)
        print(f"\n{n_tok:,} tokens in {wall:.1f} s = {n_tok / max(wall, 1e-9):,.0f} tokens/s")


def refuse_foreign_dir(out, existing, args):
    """A non-empty --output_dir that holds no store is never overwritten without --force."""
    if existing is None and out.exists() and any(out.iterdir()) and not args.force:
        st.die(f"--output_dir {out} exists and is not a token store; use another --output_dir or --force")


def reuse_or_build(args, tok, tok_info, variant, out, prefix, client):
    """A complete local store of this variant, else the remote one (--download_from_s3), else a build.
    The source is read only in the last case, so a compute node needs no copy of it."""
    existing = st.read_meta(out)
    if existing is not None and not args.force:
        if existing.get("variant") != variant:
            st.die(f"--output_dir {out} holds a store of another variant ({existing.get('variant_id')}); "
                   "use another --output_dir or --force to replace it")
        st.check_files(out, existing)
        if args.download_from_s3:  # a node must not train on a store other than the published one
            remote = s3sync.remote_meta(args.s3_bucket, prefix, client)
            if (remote is not None and remote.get("variant") == existing.get("variant")
                    and remote.get("store_id") != existing.get("store_id")):
                st.die(f"--output_dir {out} holds store {existing.get('store_id')}, but s3://{args.s3_bucket}/{prefix} "
                       f"publishes store {remote.get('store_id')} of the same variant; --force replaces the local "
                       "one with the published one, or use another --output_dir")
        print(f"reusing the complete store in {out} (--force rebuilds it)")
        print_summary(existing)
        return existing
    refuse_foreign_dir(out, existing, args)
    if args.download_from_s3:
        print(f"looking for a remote store at s3://{args.s3_bucket}/{prefix}", flush=True)
        if s3sync.download_store(args.s3_bucket, prefix, out, variant, client):
            meta = st.read_meta(out)
            print_summary(meta)
            return meta
    meta, wall = build_store(args, tok, tok_info, variant)
    print_summary(meta, wall)
    return meta


def fetch_published(args, out, prefix, expected, client):
    """--download_only: the store published at the prefix, or a one-line error; never a build. With an
    explicit --s3_prefix any variant is accepted (a node need not repeat the build flags)."""
    where = f"s3://{args.s3_bucket}/{prefix}"
    print(f"download only: looking for the published store at {where}", flush=True)
    existing = st.read_meta(out)
    remote = s3sync.remote_meta(args.s3_bucket, prefix, client)
    if remote is None:
        st.die(f"--download_only: no published store at {where} (no meta.json); publish one with "
               "fetch_arxiv.py ... --upload_to_s3, or fix --s3_bucket / --s3_prefix")
    if existing is not None and existing.get("store_id") == remote.get("store_id"):
        st.check_files(out, existing)
        print(f"{out} already holds the published store {remote['store_id'][:12]}")
    else:
        if existing is not None and not args.force:
            st.die(f"--output_dir {out} holds store {existing.get('store_id')} ({existing.get('variant_id')}), not the "
                   f"published {remote.get('store_id')}; --force replaces it, or use another --output_dir")
        refuse_foreign_dir(out, existing, args)
        s3sync.download_store(args.s3_bucket, prefix, out, expected, client)
    meta = st.read_meta(out)
    print_summary(meta)
    return meta


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    tok, tok_info = load_tokenizer(args.tokenizer)
    variant = variant_of(args, tok_info)
    out = Path(args.output_dir)
    prefix = args.s3_prefix if args.s3_prefix is not None else default_s3_prefix(variant)
    if not args.download_only:
        print(f"variant {variant_id(variant)}: {variant['dataset']} "
              f"{'full' if args.max_examples_per_split is None else f'max {args.max_examples_per_split} papers/split'}"
              f", tokenizer {tok_info['name']} ({tok_info['vocab_size']} ids) -> {out}")

    # what a killed or crashed earlier run left beside the store (half-written, never valid)
    for d in st.clean_stale_temps(out):
        print(f"removed {d}, left by an earlier run that did not finish")
    try:
        client = s3sync.s3_client(args.s3_endpoint_url) if (args.upload_to_s3 or args.download_from_s3) else None
        if args.download_only:
            meta = fetch_published(args, out, prefix, None if args.s3_prefix is not None else variant, client)
        else:
            meta = reuse_or_build(args, tok, tok_info, variant, out, prefix, client)
        if args.upload_to_s3:
            s3sync.upload_store(out, args.s3_bucket, prefix, client, force=args.force)
    except st.StoreError as e:
        st.die(str(e))
    except OSError as e:
        if not st.is_no_space(e):
            raise
        st.die(str(st.no_space_error(e.filename or out)))  # elsewhere than the store (e.g. a cache)
    print(f"done in {time.time() - t_start:.1f} s: {out} (store_id {meta['store_id']})")
    return meta


if __name__ == "__main__":
    st.cli(main)
