"""select_categories(K, seed): deterministic, nested in K, balanced over seeds 0..10."""
import collections

import pytest

import store as st


def test_permutation_is_a_fixed_ordering_of_the_11_names():
    assert sorted(st.CATEGORY_PERMUTATION) == sorted(st.CATEGORIES)
    assert len(set(st.CATEGORY_PERMUTATION)) == 11
    assert st.select_categories(11, 0) == st.CATEGORY_PERMUTATION
    assert st.select_categories(3, 4) == ["cs.SY", "math.ST", "cs.DS"]  # written down: must never change


def test_deterministic():
    for K in range(1, 12):
        for seed in range(15):
            assert st.select_categories(K, seed) == st.select_categories(K, seed)


def test_nested_in_K():
    for seed in range(11):
        prev = []
        for K in range(1, 12):
            cur = st.select_categories(K, seed)
            assert cur[:len(prev)] == prev and len(set(cur)) == K
            prev = cur


def test_balanced_over_seeds():
    for K in range(1, 12):
        counts = collections.Counter(c for seed in range(11) for c in st.select_categories(K, seed))
        assert set(counts) == set(st.CATEGORIES) and set(counts.values()) == {K}


@pytest.mark.parametrize("K", [0, 12, -1, 2.5, True])
def test_K_out_of_range(K):
    with pytest.raises(st.StoreError, match="--K must be an integer in 1..11"):
        st.select_categories(K, 0)
