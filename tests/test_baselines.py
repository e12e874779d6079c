"""baselines.py: store statistics, compression rates and near-duplicate detection between train and test."""
import math

import numpy as np
import pytest

import baselines
import store as st


def test_near_duplicates_found_and_distinct_papers_not(tmp_path):
    rng = np.random.default_rng(0)
    train = [rng.integers(2, 5000, 800) for _ in range(6)]
    near = train[4].copy()
    near[400] = 9  # one edit: 5 of ~800 shingles change
    test = [near, rng.integers(2, 5000, 800), train[0][:300]]
    with st.StoreWriter(tmp_path / "s", st.CATEGORIES[:2]) as w:
        for i, t in enumerate(train):
            w.add("train", i % 2, t, n_bytes=len(t))
        for i, t in enumerate(test):
            w.add("test", i % 2, t, n_bytes=len(t))
        w.finish({"tokenizer": {"vocab_size": 5000, "sha256": None}, "variant": {}})
    s = st.Store(tmp_path / "s")
    best = baselines.near_duplicates(s, progress=False)
    ids = s.papers("test").tolist()
    assert best[ids[0]] >= 0.9          # one-token edit of a train paper
    assert best[ids[1]] < 0.1           # unrelated random paper
    assert best[ids[2]] < 0.8           # a prefix (300 of 800 tokens) is similar but not a near-duplicate
    b = baselines.store_baselines(s, progress=False)
    assert b["overall"]["near_duplicate_test_papers"] == [ids[0]]
    assert b["per_category"]["math.AC"]["test_near_duplicate_rate"] == pytest.approx(0.5)
    # unigram entropy of uniform ids over ~5000 values, from 2,400 tokens: close to ln(2400) at most
    assert 6.5 < b["per_category"]["math.AC"]["unigram_entropy_nats"] <= math.log(2400)
    assert b["per_category"]["math.AC"]["compress_bpb"]["gzip"] is None  # no bundled tokenizer, no text


def test_sample_store_compression_and_table(sample_store, capsys):
    b = baselines.main(["--data_dir", str(sample_store)])
    assert set(b["per_category"]) == set(st.CATEGORIES)
    for r in b["per_category"].values():
        cb = r["compress_bpb"]
        assert 0 < cb["lzma"] < 8 and 0 < cb["gzip"] < 8 and 0 < cb["bz2"] < 8
        assert 3 < r["bytes_per_token"] < 8 and r["test_papers"] == 2
    assert "math.ST" in capsys.readouterr().out
