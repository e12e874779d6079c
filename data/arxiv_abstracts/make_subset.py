"""
Cut the shipped real-text corpus `data/arxiv_abstracts_subset` from the shared arXiv abstracts
(22,000 titles + abstracts of real arXiv papers, 11 categories, hub layout; see NOTICE.md there).

Selection, deterministic and split-preserving: within each existing split of the source, the papers of
each category are ranked by sha256 of their arxiv_id (the string as stored) and the first PER_SPLIT[split]
are kept; the kept rows keep their source order. No paper changes split, and a category's papers are a
hash-random sample rather than the first ones of a file. Columns are copied verbatim.

With pyarrow 26.0.1 (requirements.txt) the output is bit-identical to the shipped files:

    python data/arxiv_abstracts/make_subset.py                      # reads ../shared or /work/shared
    python data/arxiv_abstracts/make_subset.py --source DIR --out DIR
"""
import argparse
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "test")
# 300 papers per category: enough train text that K = 1 at the smoke plan's largest budget (27k tokens)
# sees under one epoch of its category; test kept small (20) because every smoke run evaluates all of it:
# with 30 the exact test evaluation was most of a smoke run's CPU time.
PER_SPLIT = {"train": 260, "validation": 20, "test": 20}
N_CATEGORIES = 11
COLUMNS = ("text", "label", "arxiv_id", "primary_category", "categories")
SCHEMA = pa.schema([("text", pa.string()), ("label", pa.int64()), ("arxiv_id", pa.string()),
                    ("primary_category", pa.string()), ("categories", pa.string())])


def default_source():
    for d in (ROOT.parent / "shared" / "data" / "arxiv-abstracts", Path("/work/shared/data/arxiv-abstracts")):
        if d.is_dir():
            return d
    return None


def rank_key(arxiv_id):
    return hashlib.sha256(arxiv_id.encode("utf-8")).hexdigest()


def cut(table, n):
    """The rows of `table` kept: per label, the n with the smallest sha256(arxiv_id), in source order."""
    ids, labels = table.column("arxiv_id").to_pylist(), table.column("label").to_pylist()
    keep = []
    for c in range(N_CATEGORIES):
        rows = sorted((i for i, lab in enumerate(labels) if lab == c), key=lambda i: rank_key(ids[i]))
        if len(rows) < n:
            raise SystemExit(f"category {c}: only {len(rows)} papers, {n} wanted")
        keep += rows[:n]
    return table.select(list(COLUMNS)).take(sorted(keep)).cast(SCHEMA)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=default_source(), help="the shared arxiv-abstracts folder")
    p.add_argument("--out", default=str(ROOT / "data" / "arxiv_abstracts_subset"))
    args = p.parse_args(argv)
    if args.source is None or not Path(args.source).is_dir():
        raise SystemExit("--source: the shared arxiv-abstracts folder is needed (../shared/data/arxiv-abstracts)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (src,) = sorted(Path(args.source).glob(f"{split}-*.parquet"))
        sub = cut(pq.read_table(src), PER_SPLIT[split]).replace_schema_metadata(None)
        # fixed writer options: the bytes depend on nothing but the input and the pyarrow version
        pq.write_table(sub, out / f"{split}-00000-of-00001.parquet", compression="zstd", compression_level=9,
                       row_group_size=1 << 20, use_dictionary=["primary_category", "categories"])
        print(f"{split}: {sub.num_rows} papers -> {out / f'{split}-00000-of-00001.parquet'}")


if __name__ == "__main__":
    main()
