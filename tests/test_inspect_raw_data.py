"""The source dataset as fetch_arxiv.py loads it (datasets.load_dataset on a local hub-layout copy, and on
the Hub, emulated on 127.0.0.1): splits, features, label names, counts; the summaries are written to
tests/outputs/ for a human to read."""
import argparse
import json
import os
import subprocess
import sys

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
