"""Near-duplicate grouping: thresholds, chains, exact text duplicates, blocks, the approximate path."""
import numpy as np
import pytest

from labeling.duplicates import find_duplicate_groups, normalise_text, text_key


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_unit(n, dim=32, seed=0):
    return unit(np.random.default_rng(seed).normal(size=(n, dim)))


def near(vector, similarity, seed):
    """A unit vector at exactly `similarity` cosine from `vector`."""
    rng = np.random.default_rng(seed)
    other = rng.normal(size=vector.shape)
    other -= other @ vector * vector
    other /= np.linalg.norm(other)
    return similarity * vector + np.sqrt(1 - similarity ** 2) * other


def as_sets(result):
    return [set(group.tolist()) for group in result.groups]


def test_pairs_above_the_threshold_are_grouped_and_below_are_not():
    base = random_unit(10, seed=1)
    vectors = np.vstack([base, near(base[2], 0.97, 5)[None], near(base[7], 0.90, 6)[None]])
    result = find_duplicate_groups(vectors=vectors, threshold=0.95)
    assert as_sets(result) == [{2, 10}]
    assert result.method == "exact" and result.duplicate_rows == 1
    looser = find_duplicate_groups(vectors=vectors, threshold=0.88)
    assert sorted(map(sorted, as_sets(looser))) == [[2, 10], [7, 11]]


def test_a_chain_is_one_group_and_groups_come_largest_first():
    base = random_unit(20, seed=2)
    a = base[0]
    b = unit([near(a, 0.97, 1)])[0]
    c = unit([near(b, 0.97, 2)])[0]  # about 0.88 from a: joined through b
    d = unit([near(base[5], 0.99, 3)])[0]
    vectors = np.vstack([base, a[None] * 0 + b, c, d])  # rows 20 (b), 21 (c), 22 (d)
    result = find_duplicate_groups(vectors=vectors, threshold=0.95)
    assert as_sets(result) == [{0, 20, 21}, {5, 22}]


def test_equal_texts_are_grouped_whatever_their_vectors():
    vectors = random_unit(6, seed=3)
    texts = ["Hello  World", "something else", "hello world ", "another", "ANOTHER", "unique"]
    result = find_duplicate_groups(vectors=vectors, text_keys=[text_key(t) for t in texts])
    assert as_sets(result) == [{0, 2}, {3, 4}]
    assert result.distinct_texts == 4
    assert normalise_text("  A\tB\n c ") == "a b c"


def test_blocks_give_the_same_groups_as_one_block():
    rng = np.random.default_rng(4)
    base = random_unit(300, seed=4)
    copies = [near(base[i], 0.96 + 0.03 * rng.random(), i) for i in range(0, 300, 7)]
    vectors = unit(np.vstack([base, copies]))
    whole = find_duplicate_groups(vectors=vectors, block=10_000)
    blocked = find_duplicate_groups(vectors=vectors, block=37)
    assert as_sets(whole) == as_sets(blocked)
    assert len(whole.groups) == len(copies)


def test_the_approximate_path_finds_nearly_every_group_of_the_exact_one():
    rng = np.random.default_rng(5)
    base = random_unit(3000, dim=48, seed=5)
    sources = rng.choice(3000, 300, replace=False)
    copies = unit([near(base[i], 0.96 + 0.035 * rng.random(), int(i)) for i in sources])
    vectors = np.vstack([base, copies])
    exact = find_duplicate_groups(vectors=vectors)
    approximate = find_duplicate_groups(vectors=vectors, exact_max_rows=1000)
    assert exact.method == "exact" and approximate.method == "approximate"
    exact_groups = {frozenset(g) for g in as_sets(exact)}
    found = {frozenset(g) for g in as_sets(approximate)}
    assert len(exact_groups) == 300
    assert len(exact_groups & found) >= 0.95 * len(exact_groups)
    assert found <= exact_groups  # never a pair below the threshold


def test_progress_ends_at_one_and_bad_thresholds_are_refused():
    seen = []
    find_duplicate_groups(vectors=random_unit(50), progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(ValueError):
        find_duplicate_groups(vectors=random_unit(5), threshold=0.5)
    with pytest.raises(ValueError):
        find_duplicate_groups(vectors=random_unit(5), text_keys=[1, 2])


def test_empty_and_single_row():
    assert find_duplicate_groups(vectors=np.zeros((0, 8), dtype=np.float32)).groups == []
    assert find_duplicate_groups(vectors=random_unit(1), text_keys=[text_key("x")]).groups == []
