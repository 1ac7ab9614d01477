"""Shared prompt prefixes: found on token ids, computed once, and answers equal to computing every row whole."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.backends.base import ChoiceRequest, GenerateRequest
from evalkit.backends.hf import HFBackend, peft_quietly
from evalkit.backends.prefix import MIN_SHARED, PACK_ROWS, PrefixGroup, PrefixStore, packed_groups, plan_prefixes
from tests.test_backend import direct_logprob, reference_generate

HEADER = list(range(100, 140))  # 40 tokens every few-shot row starts with
FEW_SHOT = (
    "Classify each ticket: billing, technical, account, shipping or other.\n"
    "Ticket: my invoice is wrong\nCategory: billing\n"
    "Ticket: the app crashes\nCategory: technical\n"
    "Ticket: please change my email address\nCategory: account\n"
    "Ticket: the parcel never arrived\nCategory: shipping\n"
)
TICKETS = ["I was charged twice", "cannot log in", "where is my parcel", "refund please", "refunds please"]
CHOICES = (" billing", " technical support", " account")


def test_rows_with_a_common_beginning_share_exactly_that_many_tokens():
    rows = [HEADER + [1, 2], HEADER + [3], HEADER + [1, 5, 6], [7] * 50]
    groups = plan_prefixes(rows)
    assert [(len(g.prefix), sorted(g.rows)) for g in groups] == [(40, [0, 1, 2]), (0, [3])]
    assert groups[0].prefix == tuple(HEADER)


def test_every_row_keeps_its_last_token_outside_the_prefix():
    groups = plan_prefixes([HEADER, HEADER, HEADER + [5]])
    assert [(len(g.prefix), sorted(g.rows)) for g in groups] == [(39, [0, 1, 2])]


def test_a_short_common_beginning_is_not_shared():
    rows = [list(range(MIN_SHARED - 1)) + [500 + i] * 30 for i in range(3)]
    assert [(g.prefix, sorted(g.rows)) for g in plan_prefixes(rows)] == [((), [0, 1, 2])]


def test_a_row_sharing_only_a_header_does_not_shorten_the_few_shot_group():
    chat_header = list(range(20))
    few_shot = chat_header + list(range(1000, 1200))
    rows = [few_shot + [1], few_shot + [2], few_shot + [3], chat_header + [9] * 30]
    groups = plan_prefixes(rows)
    assert [(len(g.prefix), sorted(g.rows)) for g in groups] == [(220, [0, 1, 2]), (0, [3])]


def test_a_stored_prefix_is_reused_when_nearly_as_long_and_by_a_row_alone():
    stored = (tuple(HEADER),)
    nearly = [HEADER + [1, 2, 3], HEADER + [1, 2, 4], HEADER + [1, 2, 5, 6]]  # share 42 tokens, 40 stored
    group = plan_prefixes(nearly, stored)[0]
    assert (group.prefix, group.stored) == (tuple(HEADER), True)
    alone = plan_prefixes([HEADER + [8, 9]], stored)[0]
    assert (alone.prefix, alone.stored) == (tuple(HEADER), True)
    much_longer = [HEADER + list(range(200, 260)) + [i] for i in range(3)]  # share 100 tokens, 40 stored
    group = plan_prefixes(much_longer, stored)[0]
    assert (len(group.prefix), group.stored) == (100, False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([(), tuple(HEADER), tuple(HEADER[:20]), (7,) * 30]), st.lists(st.integers(0, 3), max_size=6)
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_row_is_planned_once_under_a_prefix_of_its_own_tokens(shapes):
    rows = [list(head) + tail or [0] for head, tail in shapes]
    groups = plan_prefixes(rows)
    assert sorted(i for g in groups for i in g.rows) == list(range(len(rows)))
    for group in groups:
        assert group.prefix == () or len(group.prefix) >= MIN_SHARED
        for i in group.rows:
            assert tuple(rows[i][: len(group.prefix)]) == group.prefix and len(rows[i]) > len(group.prefix)


def test_rows_that_continue_one_stored_prefix_are_planned_as_one_group():
    stored = (tuple(HEADER),)
    changed = [HEADER + [i] * 3 + [1] for i in range(5)]  # the stored demos, then rows of their own
    nearly = [HEADER + [9, 9, 1], HEADER + [9, 9, 2]]  # a run that shares two more tokens
    own = [HEADER[:20] + [i] * 30 for i in range(3)]  # demos of their own after a short stored instruction
    groups = plan_prefixes(changed + nearly + own + [[7] * 20], (*stored, tuple(HEADER[:20])))
    assert [(g.prefix, sorted(g.rows), g.stored) for g in groups] == [
        (tuple(HEADER), [0, 1, 2, 3, 4, 5, 6], True),
        ((), [7, 8, 9, 10], False),  # the instruction is under half of each row: they batch as whole rows
    ]


def test_several_small_groups_become_packs_and_a_lone_small_group_keeps_its_prefix():
    small = [PrefixGroup(tuple(HEADER), [0, 1]), PrefixGroup(tuple(HEADER[:30]), [2, 3, 4])]
    large = PrefixGroup((9,) * 20, list(range(5, 5 + PACK_ROWS + 1)))
    stored = PrefixGroup(tuple(HEADER[:20]), [20, 21], stored=True)
    alone = PrefixGroup((), [30, 31])
    kept, packs = packed_groups([small[0], large, small[1], stored, alone])
    assert kept == [large, stored] and packs == [[0, 1], [2, 3, 4], [30], [31]]
    assert packed_groups([small[0], large, alone]) == ([small[0], large, alone], [])


def test_the_store_drops_the_least_recently_used_prefix_past_its_budget():
    store = PrefixStore(budget=100)
    store.put(None, (1,), "a", 60)
    store.put("lora", (2,), "b", 30)
    assert store.get(None, (1,)) == "a"  # now the most recently used
    store.put(None, (3,), "c", 30)
    assert store.prefixes(None) == [(1,), (3,)] and store.prefixes("lora") == []
    store.put(None, (4,), "too big", 101)
    assert store.get(None, (4,)) is None


# ---------------------------------------------------------------------------------- on the tiny model


def few_shot_contexts():
    return [f"{FEW_SHOT}Ticket: {text}\nCategory:" for text in TICKETS]


@pytest.fixture
def sharing(tiny_model):
    return HFBackend(tiny_model, fingerprint="t")


def unshared(tiny_model):
    backend = HFBackend(tiny_model, fingerprint="t")
    backend.min_shared = 10**9  # every row computed whole
    return backend


def test_few_shot_scores_equal_rows_computed_whole(tiny_model, sharing):
    requests = [ChoiceRequest(c, CHOICES) for c in few_shot_contexts()]
    results = sharing.score_choices(requests)
    (prefix,) = sharing.prefixes.prefixes(None)
    ids = [sharing.tokenizer(c).input_ids for c in few_shot_contexts()]
    assert len(prefix) >= len(sharing.tokenizer(FEW_SHOT).input_ids) - 1
    assert all(tuple(row[: len(prefix)]) == prefix for row in ids)  # a token prefix of every row's own ids
    whole = unshared(tiny_model).score_choices(requests)
    for request, result, reference in zip(requests, results, whole):
        assert result.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
        direct = [direct_logprob(sharing, request.context, c) for c in request.continuations]
        assert result.logprobs == pytest.approx(direct, abs=1e-4)
        assert result.context_tokens == reference.context_tokens
        assert result.is_greedy == reference.is_greedy


def test_a_later_call_reuses_the_stored_prefix(tiny_model, sharing, monkeypatch):
    contexts = few_shot_contexts()
    sharing.score_choices([ChoiceRequest(c, CHOICES) for c in contexts[:3]])
    computed = []
    original = sharing.loaded.decoder.forward
    monkeypatch.setattr(
        sharing.loaded.decoder, "forward", lambda **kw: computed.append(kw["input_ids"].shape) or original(**kw)
    )
    late = sharing.score_choices([ChoiceRequest(contexts[4], CHOICES)])[0]
    (prefix,) = sharing.prefixes.prefixes(None)
    assert len(computed) == 1 and computed[0][1] < len(prefix) // 2  # only the row's own tokens and choices ran
    assert late.logprobs == pytest.approx([direct_logprob(sharing, contexts[4], c) for c in CHOICES], abs=1e-4)


def test_rows_with_their_own_demos_and_content_free_inputs_score_as_packs_equal_to_rows_computed_whole(
    tiny_model, sharing, monkeypatch
):
    headers = [FEW_SHOT, FEW_SHOT.replace("billing", "invoices"), "Sort these tickets.\n" + FEW_SHOT]
    contexts = [f"{h}Ticket: {t}\nCategory:" for h, t in zip(headers, TICKETS)]
    blanks = [f"{h}Ticket: {blank}\nCategory:" for h in headers for blank in ("N/A", "")]
    requests = [ChoiceRequest(c, CHOICES) for c in contexts + blanks] + [ChoiceRequest("hi", CHOICES)]
    widths = []
    original = sharing.loaded.decoder.forward
    monkeypatch.setattr(
        sharing.loaded.decoder, "forward", lambda **kw: widths.append(kw["input_ids"].shape) or original(**kw)
    )
    results = sharing.score_choices(requests)
    assert [rows for rows, _ in widths] == [4]  # three packs (a row, its two blanks) and the lone row, one pass
    assert sharing.prefixes.prefixes(None) == []  # nothing kept that no later call asks for
    whole = unshared(tiny_model).score_choices(requests)
    for request, result, reference in zip(requests, results, whole):
        assert result.logprobs == pytest.approx(reference.logprobs, abs=1e-4)
        assert result.logprobs == pytest.approx(
            [direct_logprob(sharing, request.context, c) for c in request.continuations], abs=1e-4
        )
        assert (result.context_tokens, result.continuation_tokens, result.is_greedy) == (
            reference.context_tokens,
            reference.continuation_tokens,
            reference.is_greedy,
        )


def test_few_shot_greedy_outputs_equal_rows_generated_whole(tiny_model, sharing):
    prompts = few_shot_contexts()
    results = sharing.generate([GenerateRequest(p, 12) for p in prompts])
    assert sharing.prefixes.prefixes(None)
    for prompt, result in zip(prompts, results):
        assert result.text == reference_generate(sharing, prompt, 12)
        assert result.prompt_tokens == len(sharing.tokenizer(prompt).input_ids)


def test_an_adapter_never_continues_a_prefix_computed_without_it(tmp_path, tiny_model, sharing):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with peft_quietly():
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(tmp_path / "lora")
    requests = [ChoiceRequest(c, CHOICES) for c in few_shot_contexts()]
    base = sharing.score_choices(requests)
    tuned = sharing.with_adapter("lora", tmp_path / "lora").score_choices(requests)
    assert sharing.prefixes.prefixes(None) and sharing.prefixes.prefixes("lora")
    reference = unshared(tiny_model).with_adapter("lora", tmp_path / "lora").score_choices(requests)
    for a, b, c in zip(base, tuned, reference):
        assert b.logprobs == pytest.approx(c.logprobs, abs=1e-4)
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) > 1e-3  # the adapter changed the scores


def test_a_model_handed_over_for_training_shares_within_a_call_and_keeps_nothing(tiny_model, sharing, monkeypatch):
    trained = HFBackend.from_model(sharing.model, sharing.tokenizer, fingerprint="training")
    widths = []
    original = trained.loaded.decoder.forward
    monkeypatch.setattr(
        trained.loaded.decoder, "forward", lambda **kw: widths.append(kw["input_ids"].shape) or original(**kw)
    )
    trained.score_choices([ChoiceRequest(c, CHOICES) for c in few_shot_contexts()])
    shared = len(sharing.tokenizer(FEW_SHOT).input_ids) - 1
    assert widths[0][0] == 1 and widths[0][1] >= shared  # the prefix, once
    assert sum(rows for rows, _ in widths[1:]) == len(TICKETS)  # then the rows, in batches...
    assert all(width < shared // 2 for _, width in widths[1:])  # ...of their own tokens only
    assert trained.prefixes.prefixes(None) == []  # its weights may change before the next call


def test_rows_that_stop_early_leave_the_reserved_cache_and_the_rest_decode_unchanged(sharing):
    from evalkit.backends.base import cut_at_stop

    prompts = [f"{FEW_SHOT}Ticket: {text}" for text in TICKETS]  # rows that continue differently
    free = [reference_generate(sharing, p, 12) for p in prompts]
    assert len(free[0]) > 6
    stop = (free[0][3:5],)  # the first row stops after a few tokens; the others, if at all, elsewhere
    results = sharing.generate([GenerateRequest(p, 12, stop) for p in prompts])
    assert [r.text for r in results] == [cut_at_stop(text, stop) for text in free]
    assert len({r.output_tokens for r in results}) > 1  # rows did stop at different steps


def test_the_reserved_cache_refuses_to_overflow():
    from evalkit.backends.kv_cache import ReservedLayer

    layer = ReservedLayer(capacity=4, rows=2)
    layer.update(torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, 3, 8))
    assert layer.get_seq_length() == 3 and layer.keys.shape == (2, 1, 3, 8)
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 1, 3, 8)
    with pytest.raises(RuntimeError, match="key/value cache of 4 positions cannot take 5"):
        layer.update(torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8))
