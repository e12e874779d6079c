"""The source dataset as fetch_arxiv.py loads it (datasets.load_dataset on a local hub-layout copy, and on
the Hub, emulated on 127.0.0.1): splits, features, label names, counts; the summaries are written to
tests/outputs/ for a human to read."""
import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import fetch_arxiv
import store as st
from conftest import ROOT, write_hub_copy
from source_summary import HUB_PROBE, summary, write_summary


def _args(path, n=None):
    return argparse.Namespace(dataset_path=str(path), dataset_name=fetch_arxiv.DEFAULT_DATASET,
                              dataset_config="no_ref", dataset_revision=None, max_examples_per_split=n)


def test_sample_corpus_layout_splits_features_labels(outputs):
    ds, names, _ = fetch_arxiv.load_source(_args(st.SAMPLE_CORPUS, n=None))
    write_summary(outputs / "inspect_raw_data_sample_corpus.txt", st.SAMPLE_CORPUS, names, summary(ds, names))
    assert names == st.CATEGORIES
    assert set(ds) == set(st.SPLITS)
    feats = ds["train"].features
    assert feats["text"].dtype == "string"
    assert feats["label"].names == st.CATEGORIES
    rows = {s: list(ds[s]) for s in st.SPLITS}
    assert [len(rows[s]) for s in st.SPLITS] == [66, 22, 22]
    for s in st.SPLITS:  # every category in every split, texts non-trivial
        assert {r["label"] for r in rows[s]} == set(range(11))
        assert all(len(r["text"]) > 200 for r in rows[s])


ABSTRACTS = ROOT / "data" / "arxiv_abstracts_subset"
SHARED_ABSTRACTS = next((p for p in (ROOT.parent / "shared" / "data" / "arxiv-abstracts",
                                     Path("/work/shared/data/arxiv-abstracts")) if p.is_dir()), None)
needs_shared = pytest.mark.skipif(SHARED_ABSTRACTS is None, reason="the shared arXiv abstracts (../shared/data/"
                                  "arxiv-abstracts beside the repository) are not here to compare against")


def test_shipped_abstracts_layout_and_coverage(outputs):
    """The real-text corpus the main job runs on, as fetch_arxiv reads it: plain int labels meaning the 11
    names, every category in every split, >= 300 papers per category, real-length texts, unique ids, and
    each paper's label among its arXiv categories."""
    ds, names, _ = fetch_arxiv.load_source(_args(ABSTRACTS))
    write_summary(outputs / "inspect_raw_data_arxiv_abstracts.txt", ABSTRACTS, names, summary(ds, names))
    assert names == st.CATEGORIES
    rows = {s: list(ds[s]) for s in st.SPLITS}
    assert {"text", "label", "arxiv_id"} <= set(ds["train"].features)
    per_cat = Counter()
    for s in st.SPLITS:
        assert {r["label"] for r in rows[s]} == set(range(11)), s
        per_cat.update(r["label"] for r in rows[s])
        assert all(len(r["text"]) > 50 and "\n\n" in r["text"] for r in rows[s])  # title, blank line, abstract
        assert all(st.CATEGORIES[r["label"]] in r["categories"].split() for r in rows[s])
    assert min(per_cat.values()) >= 300
    ids = [r["arxiv_id"] for s in st.SPLITS for r in rows[s]]
    assert len(set(ids)) == len(ids)
    assert sum(f.stat().st_size for f in ABSTRACTS.glob("*.parquet")) < 3_000_000  # a few MB at most


@needs_shared
def test_shipped_abstracts_are_verbatim_shared_text_in_their_own_split():
    """>= 95% (in fact all) of the shipped texts occur verbatim in the shared corpus, in the same split and
    with the same id and label: real text, and no paper moved split."""
    import pyarrow.parquet as pq
    for s in st.SPLITS:
        (src,) = SHARED_ABSTRACTS.glob(f"{s}-*.parquet")
        shared = {r["arxiv_id"]: (r["text"], r["label"]) for r in pq.read_table(src).to_pylist()}
        (ours,) = ABSTRACTS.glob(f"{s}-*.parquet")
        got = pq.read_table(ours).to_pylist()
        same = sum(shared.get(r["arxiv_id"]) == (r["text"], r["label"]) for r in got)
        assert same >= 0.95 * len(got) and same == len(got), (s, same, len(got))


@needs_shared
def test_make_subset_regenerates_the_shipped_files_bit_for_bit(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "data" / "arxiv_abstracts" / "make_subset.py"),
                        "--source", str(SHARED_ABSTRACTS), "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for f in sorted(ABSTRACTS.glob("*.parquet")):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_plain_int_label_means_the_11_names(tmp_path):
    path = write_hub_copy(tmp_path / "hub", {s: [("a b c", 3), ("d", 10)] for s in st.SPLITS},
                          label_feature="int")
    ds, names, _ = fetch_arxiv.load_source(_args(path, n=5))
    assert names == st.CATEGORIES
    assert [r["label"] for r in ds["test"]] == [3, 10]


def test_dev_subset_is_deterministic_and_covers_categories():
    ds, names, _ = fetch_arxiv.load_source(_args(st.SAMPLE_CORPUS, n=13))
    pick = lambda: list(fetch_arxiv.split_rows(ds["train"], 13, 11, "train", "x"))
    a, b = pick(), pick()
    assert a == b and len(a) == 13
    assert {lab for _, _, lab in a} == set(range(11))
    assert [r for r, _, _ in a] == sorted(r for r, _, _ in a)  # source order kept
    # quotas: 13 = 11*1 + 2, so labels 0 and 1 get two papers, the others one
    counts = {c: sum(1 for _, _, lab in a if lab == c) for c in range(11)}
    assert counts == {c: (2 if c < 2 else 1) for c in range(11)}


def test_dev_subset_fills_from_passed_over_rows_when_a_category_is_rare(tmp_path):
    rows = [("x", 0)] * 6 + [("y", 1)]
    path = write_hub_copy(tmp_path / "hub", {s: rows for s in st.SPLITS}, label_feature="int")
    ds, _, _ = fetch_arxiv.load_source(_args(path, n=4))
    got = list(fetch_arxiv.split_rows(ds["train"], 4, 11, "train", "x"))
    # quota gives label 0 one place and label 1 one place; rows 1 and 2 fill the rest, in source order
    assert [r for r, _, _ in got] == [0, 1, 2, 6]


def test_emulated_hub_source_through_the_real_loader(tmp_path, outputs):
    """The default source as load_source reads it from the Hub (the emulator: a script repo whose parquet
    conversion is read at the newest refs/convert/parquet commit), in a subprocess so that HF_ENDPOINT
    reaches huggingface_hub: the 11 names, the three splits, the features and the v2 row counts."""
    from hub_emulator import HubEmulator, add_arxiv_repo
    hub = HubEmulator()
    _, shas = add_arxiv_repo(hub, st.CATEGORIES)
    hub.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        r = subprocess.run([sys.executable, "-c", HUB_PROBE, str(ROOT)], capture_output=True, text=True, env=env,
                           timeout=180, cwd=ROOT)
    finally:
        hub.stop()
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["names"] == st.CATEGORIES and got["revision"] == shas["v2"]
    splits = got["splits"]
    assert [splits[s]["rows"] for s in st.SPLITS] == [31, 13, 13]          # v2 of the conversion
    for s in st.SPLITS:
        assert set(splits[s]["features"]) == {"text", "label"}
        assert sum(splits[s]["label_counts"].values()) == splits[s]["rows"]
        assert splits[s]["first_text"].startswith(f"[no_ref v2] {s} paper ")
    write_summary(outputs / "inspect_raw_data_emulated_hub.txt", f"emulated Hub ccdv/arxiv-classification @ {shas['v2']}",
                  got["names"], splits)
