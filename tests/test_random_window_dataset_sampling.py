"""RandomWindowDataset: windows inside one pool paper, category filter, determinism, the three sampling
modes' distributions, short-paper exclusion, errors, and the script's main block."""
import numpy as np
import pytest
import torch

import random_window_dataset as rwd
import store as st
from conftest import make_synthetic_store


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    """3 categories; papers of very different lengths, some shorter than a window."""
    lengths = [50, 120, 130, 400, 101, 900, 60, 150, 1000]  # i % 3 is the category
    path, _ = make_synthetic_store(tmp_path_factory.mktemp("s") / "store", lengths=lengths, kind="uniform",
                                   vocab=300)
    return path


def _locate(ds, starts):
    """Pool index of the paper holding each window start; asserts the window lies inside it."""
    p = np.searchsorted(ds.offsets, starts, side="right") - 1
    assert np.all(p >= 0)
    assert np.all(starts >= ds.offsets[p]) and np.all(starts + ds.window <= ds.offsets[p] + ds.lengths[p])
    return p


def test_windows_inside_one_pool_paper_and_category_filter(skewed):
    for mode in rwd.SAMPLING_MODES:
        ds = rwd.RandomWindowDataset(skewed, "train", ["math.AC", "cs.AI"], sampling=mode, seed=3)
        starts, labels = ds.sample_starts(np.arange(5000))
        p = _locate(ds, starts)
        assert set(ds.labels[p].tolist()) <= {0, 2} and np.array_equal(ds.labels[p], labels)
        x = ds.sample_batch(0, 64)
        assert x.shape == (64, 101) and x.dtype == torch.int64
        # every window's tokens are exactly the store's tokens at that place
        s, _ = ds.sample_starts(np.arange(64))
        for i in range(64):
            assert np.array_equal(x[i].numpy(), np.asarray(ds.store.tokens[s[i]:s[i] + 101], dtype=np.int64))


def test_short_papers_excluded_and_len(skewed):
    ds = rwd.RandomWindowDataset(skewed, "train")
    assert ds.n_short == 2 and ds.short_tokens == 50 + 60
    assert sorted(ds.lengths.tolist()) == [101, 120, 130, 150, 400, 900, 1000]
    assert len(ds) == sum(n // 101 for n in [101, 120, 130, 150, 400, 900, 1000])
    assert "excluded 2 papers shorter than 101 tokens" in ds.summary()


def test_determinism_item_vs_batch_and_ranks(skewed):
    a = rwd.RandomWindowDataset(skewed, "train", seed=7)
    b = rwd.RandomWindowDataset(skewed, "train", seed=7)
    c = rwd.RandomWindowDataset(skewed, "train", seed=8)
    assert torch.equal(a.sample_batch(5, 32), b.sample_batch(5, 32))
    assert not torch.equal(a.sample_batch(5, 32), c.sample_batch(5, 32))
    # item i is a function of (seed, i) alone: batch (step, rank) = items (step*world + rank)*B + j
    batch = a.sample_batch(3, 8, rank=1, world_size=2)
    for j in range(8):
        assert torch.equal(batch[j], b[(3 * 2 + 1) * 8 + j])
    r0, r1 = a.sample_batch(3, 8, 0, 2), a.sample_batch(3, 8, 1, 2)
    assert not torch.equal(r0, r1)  # ranks draw different windows
    assert torch.equal(torch.cat([r0, r1]), a.sample_batch(3, 16, 0, 1))  # the global batch is world-invariant


def test_sampling_distributions(skewed):
    n = 60000
    for mode in rwd.SAMPLING_MODES:
        ds = rwd.RandomWindowDataset(skewed, "train", sampling=mode, seed=11)
        starts, labels = ds.sample_starts(np.arange(n))
        p = _locate(ds, starts)
        freq = np.bincount(p, minlength=len(ds.paper_ids)) / n
        if mode == "paper":
            expect = np.full(len(ds.paper_ids), 1 / len(ds.paper_ids))
            # within a paper, the start is uniform over its valid starts
            big = np.argmax(ds.lengths)
            rel = starts[p == big] - ds.offsets[big]
            hist = np.bincount(rel * 4 // ds.n_starts[big], minlength=4) / len(rel)
            assert np.allclose(hist, 0.25, atol=0.03)
        elif mode == "token":
            expect = ds.n_starts / ds.n_starts.sum()
        else:
            expect = np.zeros(len(ds.paper_ids))
            for c in ds.pool_labels:
                m = ds.labels == c
                expect[m] = ds.n_starts[m] / ds.n_starts[m].sum() / len(ds.pool_labels)
            cat_freq = np.bincount(labels, minlength=3)[ds.pool_labels] / n
            assert np.allclose(cat_freq, 1 / 3, atol=0.01)
        assert np.allclose(freq, expect, atol=0.01), (mode, freq, expect)


def test_errors(skewed):
    with pytest.raises(st.StoreError, match="unknown category 'cs.XX'; valid names: math.AC cs.CV cs.AI"):
        rwd.RandomWindowDataset(skewed, "train", ["cs.XX"])
    with pytest.raises(st.StoreError, match="empty pool"):
        rwd.RandomWindowDataset(skewed, "train", window=2000)
    with pytest.raises(st.StoreError, match="sampling must be one of"):
        rwd.RandomWindowDataset(skewed, "train", sampling="words")


def test_fixed_eval_windows_are_a_category_s_own_and_prefix_stable(skewed):
    """Validation windows of a category come from its papers alone (so they do not depend on which other
    categories a run trains on), and asking for more keeps the first ones (--eval_windows can grow)."""
    s = st.Store(skewed)
    a = rwd.fixed_eval_windows(s, "train", "cs.AI", 16)
    b = rwd.fixed_eval_windows(s, "train", "cs.AI", 40)
    assert a.shape == (16, 101) and a.dtype == np.int64 and np.array_equal(a, b[:16])
    papers = [np.asarray(s.paper_tokens(int(p)), dtype=np.int64) for p in s.papers("train", ["cs.AI"])]
    for w in b:
        assert any(any(np.array_equal(p[i:i + 101], w) for i in range(len(p) - 100)) for p in papers)
    other = rwd.fixed_eval_windows(s, "train", "cs.CV", 16)
    assert not np.array_equal(a, other)


def test_main_block_decodes_sample_store(sample_store, capsys, outputs):
    rwd.main(["--data_dir", str(sample_store), "--categories", "cs.IT", "math.ST", "--num_samples", "2"])
    out = capsys.readouterr().out
    (outputs / "random_window_dataset_sampling.txt").write_text(out)  # for a human to read
    assert "pool: split=train sampling=paper" in out and "cs.IT" in out and "math.ST" in out
    assert "decoded:" in out and "token ids" not in out
    assert any(w in out for w in ("channel", "estimator", "Shannon", "minimax", "Fisher"))


def test_main_block_prints_ids_for_other_tokenizers(skewed, capsys):
    rwd.main(["--data_dir", str(skewed), "--num_samples", "1"])
    assert "token ids (store tokenizer is not the bundled one)" in capsys.readouterr().out


def test_main_block_bad_category_is_one_line(sample_store, capsys):
    with pytest.raises(SystemExit) as e:
        rwd.main(["--data_dir", str(sample_store), "--categories", "nope"])
    assert e.value.code == 2 and "unknown category 'nope'" in capsys.readouterr().err
