"""select_categories(K, seed): deterministic, nested in K, balanced over seeds 0..10."""
import collections

import pytest

import numpy as np

import store as st
from random_window_dataset import CATEGORY_PERMUTATION, select_categories


def test_permutation_is_a_fixed_ordering_of_the_11_names():
    assert sorted(CATEGORY_PERMUTATION) == sorted(st.CATEGORIES)
    assert len(set(CATEGORY_PERMUTATION)) == 11
    assert select_categories(11, 0) == CATEGORY_PERMUTATION
    assert select_categories(3, 4) == ["cs.SY", "math.ST", "cs.DS"]  # written down: must never change


def test_permutation_is_the_documented_derivation_and_subsets_are_cyclic_windows():
    # the comment beside CATEGORY_PERMUTATION says how it was derived: check it (with today's numpy)
    perm = np.random.default_rng(20240611).permutation(11)
    assert [st.CATEGORIES[i] for i in perm] == CATEGORY_PERMUTATION
    # seed s, size K: the K names of the permutation starting at s, wrapping around (seeds >= 11 repeat)
    assert select_categories(2, 10) == ["cs.CE", "cs.CV"]
    assert select_categories(5, 8) == ["cs.AI", "math.AC", "cs.CE", "cs.CV", "cs.IT"]
    assert select_categories(4, 13) == select_categories(4, 2) == ["math.GR", "cs.NE", "cs.SY", "math.ST"]


def test_nested_in_K():
    for seed in range(11):
        prev = []
        for K in range(1, 12):
            cur = select_categories(K, seed)
            assert cur[:len(prev)] == prev and len(set(cur)) == K
            prev = cur


def test_balanced_over_seeds(outputs):
    for K in range(1, 12):
        counts = collections.Counter(c for seed in range(11) for c in select_categories(K, seed))
        assert set(counts) == set(st.CATEGORIES) and set(counts.values()) == {K}
    # the whole design for a human to read: the subset of every (K, seed), and how often each category is in
    lines = [f"K={K:2d} seed={seed:2d}: {' '.join(select_categories(K, seed))}" for K in range(1, 12)
             for seed in range(11)]
    lines += ["", "appearances over seeds 0..10 (every category K times for each K):"]
    lines += [f"K={K:2d}: " + " ".join(f"{c}={n}" for c, n in sorted(collections.Counter(
        c for seed in range(11) for c in select_categories(K, seed)).items())) for K in range(1, 12)]
    (outputs / "category_selection.txt").write_text("\n".join(lines) + "\n")
    assert len((outputs / "category_selection.txt").read_text().splitlines()) == 121 + 2 + 11


@pytest.mark.parametrize("K", [0, 12, -1, 2.5, True])
def test_K_out_of_range(K):
    with pytest.raises(st.StoreError, match="--K must be an integer in 1..11"):
        select_categories(K, 0)
