"""How the embedder groups a batch's texts (sorted by token count) into onnxruntime runs."""
from __future__ import annotations

import itertools
import random

from labeling.embeddings import RUN_OVERHEAD_TOKENS, lanes_for_runs, padding_runs


def cost(lengths, runs):
    return sum(RUN_OVERHEAD_TOKENS + (last - first) * lengths[last - 1] for first, last in runs)


def all_splits(count):
    for cuts in itertools.product([False, True], repeat=count - 1):
        bounds = [0] + [i + 1 for i, cut in enumerate(cuts) if cut] + [count]
        yield list(zip(bounds, bounds[1:]))


def test_runs_cover_every_row_once_in_order():
    lengths = sorted(random.Random(3).randint(3, 80) for _ in range(64))
    runs = padding_runs(lengths)
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(previous[1] == following[0] for previous, following in zip(runs, runs[1:]))
    assert all(first < last for first, last in runs)


def test_the_grouping_is_the_cheapest_of_all_splits():
    rng = random.Random(7)
    for _ in range(200):
        lengths = sorted(rng.randint(3, 60) for _ in range(rng.randint(1, 9)))
        best = min(cost(lengths, split) for split in all_splits(len(lengths)))
        assert cost(lengths, padding_runs(lengths)) == best


def test_the_row_cap_is_kept_and_the_grouping_is_the_cheapest_within_it():
    rng = random.Random(11)
    for _ in range(200):
        lengths = sorted(rng.randint(3, 60) for _ in range(rng.randint(1, 9)))
        cap = rng.randint(1, 5)
        runs = padding_runs(lengths, max_rows=cap)
        assert all(last - first <= cap for first, last in runs)
        allowed = [split for split in all_splits(len(lengths)) if all(last - first <= cap for first, last in split)]
        assert cost(lengths, runs) == min(cost(lengths, split) for split in allowed)


def test_similar_lengths_stay_one_run_and_an_outlier_gets_its_own():
    assert padding_runs([12] * 8) == [(0, 8)]
    assert padding_runs([11, 11, 12, 12, 12, 12, 13, 13]) == [(0, 8)]
    assert padding_runs([9, 10, 10, 11, 12, 12, 13, 120]) == [(0, 7), (7, 8)]


def test_empty_batch_has_no_runs():
    assert padding_runs([]) == []


def test_lanes_get_the_costliest_runs_first_and_finish_close_together():
    assert lanes_for_runs([10, 50, 20, 30], 2) == [[1, 0], [3, 2]]  # 50 + 10 against 30 + 20
    assert lanes_for_runs([5], 2) == [[0]]  # an idle lane is left out
    rng = random.Random(5)
    for _ in range(100):
        costs = [rng.randint(1, 100) for _ in range(rng.randint(1, 8))]
        lanes = lanes_for_runs(costs, 2)
        assert sorted(i for lane in lanes for i in lane) == list(range(len(costs)))
        loads = [sum(costs[i] for i in lane) for lane in lanes]
        assert max(loads) - min(loads) <= max(costs)
