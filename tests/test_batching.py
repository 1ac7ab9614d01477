"""Batch planning as pure functions of token counts: length order, batch sizes and limits, decoding settings,
memory arithmetic and order restoration, without a model."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.backends.batching import (
    MAX_AUTO_BATCH,
    MAX_GENERATE_BATCH,
    TOKEN_BUDGET,
    CacheShape,
    by_settings,
    common_beginning,
    generation_batches,
    in_request_order,
    longest_first,
    pack_length,
    plan_batches,
    rows_in_memory,
    scoring_batches,
    scoring_length,
)


def test_longest_first_keeps_the_order_of_rows_of_equal_length():
    lengths = [3, 9, 3, 9, 1]
    assert longest_first(range(5), lengths) == [1, 3, 0, 2, 4]
    assert longest_first([4, 2, 0], {4: 1, 2: 3, 0: 3}) == [2, 0, 4]


def test_a_fixed_batch_size_cuts_every_batch_to_that_many_rows():
    lengths = [100, 90, 10, 9, 8, 2, 1]
    assert plan_batches(range(7), lengths, batch_size=3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_batches(range(7), lengths, batch_size=1) == [[i] for i in range(7)]


def test_an_automatic_batch_stops_at_its_most_rows():
    assert plan_batches(range(10), [5] * 10, most=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(plan_batches(range(200), [1] * 200)) == 200 // MAX_AUTO_BATCH + 1  # 64, 64, 64, 8


def test_an_automatic_batch_stays_within_the_token_budget():
    width = 1000  # four rows pad to 4,000 tokens; a fifth would make 5,000 > TOKEN_BUDGET
    batches = plan_batches(range(9), [width] * 9)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert all(len(b) * width <= TOKEN_BUDGET for b in batches)


def test_a_much_shorter_row_starts_a_new_batch_once_the_batch_is_large():
    # 100 + 100 + 100 + 100 + 100 + 100 = 600 padded tokens >= MIN_SPLIT: a row of 80 (< 0.9 x 100) splits
    assert plan_batches(range(8), [100] * 6 + [80, 80]) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    # below MIN_SPLIT padded tokens the short row still joins (small matrix products run far slower)
    assert plan_batches(range(4), [100, 100, 80, 80]) == [[0, 1, 2, 3]]
    # a row at 90% of the first is full enough
    assert plan_batches(range(7), [100] * 6 + [90]) == [[0, 1, 2, 3, 4, 5, 6]]
    # min_fill 0 (generation): padding is never a reason to split
    assert plan_batches(range(8), [100] * 6 + [1, 1], min_fill=0.0) == [list(range(8))]


def test_the_scoring_length_leaves_out_the_prefix_and_each_continuations_last_token():
    row = (list(range(50)), [[1], [2, 3], [4, 5, 6]])
    assert scoring_length(row, 0) == 50 + 0 + 1 + 2
    assert scoring_length(row, 40) == 10 + 3


def test_a_pack_lays_out_its_common_beginning_once_and_leaves_each_row_a_token_of_its_own():
    demos = list(range(100, 130))
    row = (demos + [1, 2, 3], [[7], [8, 9]])  # a row: 33 context tokens, then 0 + 1 laid-out choice tokens
    blank = (demos + [5], [[7], [8, 9]])  # a content-free input with the same demos
    assert common_beginning([row, blank]) == 30 and common_beginning([row]) == 0
    assert pack_length([row, blank]) == 30 + (3 + 1) + (1 + 1)
    assert pack_length([row]) == scoring_length(row, 0)
    same = (demos + [1, 2, 3], [[4]])  # a context that is all common still keeps its last token
    assert common_beginning([row, same]) == 32 and pack_length([row, same]) == 32 + (1 + 1) + 1
    assert common_beginning([row, blank], shared=10) == 20  # counted after a computed prefix


def test_scoring_batches_sort_by_length_and_bound_by_memory_only_with_a_prefix():
    rows = {7: ([1] * 5, [[1]]), 3: ([1] * 20, [[1, 2]]), 5: ([1] * 12, [[1]])}
    asked = []

    def fits(tokens: int) -> int:
        asked.append(tokens)
        return 1

    assert scoring_batches(rows, 0, fits=fits) == [[3, 5, 7]] and asked == []
    assert scoring_batches(rows, 4, fits=fits) == [[3], [5], [7]]
    assert asked == [4 + 17]  # the longest row's own tokens after the prefix, plus the prefix
    assert scoring_batches(rows, 0, batch_size=2) == [[3, 5], [7]]
    assert scoring_batches({}, 0) == []


def test_by_settings_groups_rows_in_the_order_they_come():
    groups = by_settings([4, 1, 3, 0, 2], lambda i: "greedy" if i % 2 == 0 else "sampled")
    assert groups == {"greedy": [4, 0, 2], "sampled": [1, 3]}
    assert list(groups) == ["greedy", "sampled"]


def test_generation_batches_split_by_settings_and_size_each_by_its_longest_row():
    lengths = {0: 10, 1: 50, 2: 30, 3: 40, 4: 20}
    new_tokens = {0: 8, 1: 8, 2: 64, 3: 8, 4: 64}
    asked = []

    def fits(length: int, max_new_tokens: int) -> int:
        asked.append((length, max_new_tokens))
        return 2

    planned = generation_batches(lengths, lambda i: new_tokens[i], fits=fits)
    assert planned == [(8, [1, 3]), (8, [0]), (64, [2, 4])]
    assert asked == [(50, 8), (30, 64)]
    # a fixed batch size wins over memory, and a short row never starts a batch of its own
    assert generation_batches({0: 100, 1: 1, 2: 1}, lambda i: None, batch_size=3) == [(None, [0, 1, 2])]
    assert generation_batches({0: 100, 1: 1, 2: 1}, lambda i: None) == [(None, [0, 1, 2])]


def test_rows_in_memory_is_a_share_of_the_free_memory_over_a_rows_cache_and_logits():
    shape = CacheShape(layers=2, kv_heads=4, head_dim=8, element_size=4, vocab_size=1000)
    assert shape.row_bytes(10) == 10 * 2 * 2 * 4 * 8 * 4 + 4 * 1000  # 5,120 + 4,000 = 9,120
    assert rows_in_memory(10, shape, 4 * 9120 * 5) == 5  # a quarter of the memory holds five rows
    assert rows_in_memory(10, shape, 100) == 1  # at least one row, however little memory there is
    assert rows_in_memory(10, shape, 1 << 40) == MAX_GENERATE_BATCH


def test_answers_go_back_in_request_order_and_a_missing_one_is_named():
    assert in_request_order(3, [(2, "c"), (0, "a"), (1, "b")]) == ["a", "b", "c"]
    assert in_request_order(0, []) == []
    with pytest.raises(ValueError, match=r"no answer for request\(s\) \[1\] of 3"):
        in_request_order(3, [(0, "a"), (2, "c")])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=80), st.one_of(st.none(), st.integers(1, 9)), st.integers(1, 70)
)
def test_every_row_is_planned_once_and_no_batch_breaks_its_limits(lengths, batch_size, most):
    order = longest_first(range(len(lengths)), lengths)
    batches = plan_batches(order, lengths, batch_size=batch_size, most=most)
    assert [i for batch in batches for i in batch] == order  # consecutive slices of the length order
    for batch in batches:
        assert all(lengths[i] <= lengths[batch[0]] for i in batch)  # padded to its first row
        if batch_size:
            assert len(batch) <= batch_size
        else:
            assert len(batch) <= most
            assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= TOKEN_BUDGET


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, 500), st.tuples(st.integers(1, 400), st.sampled_from([4, 16, 64])), max_size=40))
def test_generation_batches_cover_every_row_once_with_one_setting_each(rows):
    lengths = {i: length for i, (length, _) in rows.items()}
    planned = generation_batches(lengths, lambda i: rows[i][1], fits=lambda length, key: 3)
    assert Counter(i for _, batch in planned for i in batch) == Counter(list(rows))
    for key, batch in planned:
        assert len(batch) <= 3 and all(rows[i][1] == key for i in batch)


def test_batch_planning_imports_no_torch():
    import subprocess

    code = "import evalkit.backends.batching, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
