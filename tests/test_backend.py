"""The transformers backend on a tiny random Llama: batched results equal a direct computation."""

import pytest
import torch

from evalkit.backends.base import ChoiceRequest, GenerateRequest, cut_at_stop
from evalkit.backends.hf import HFBackend

CONTEXTS = [
    "Ticket: my invoice is wrong\nCategory:",
    "Q: 2 + 3?\nA:",
    "Ticket: the app crashes on start, every single time I open it after the update\nCategory:",
    "Category: ",  # trailing space moves into the continuation, as in lm-evaluation-harness
]
CHOICES = (" billing", " technical support", " account", " x")


def direct_logprob(backend, context, continuation):
    """Sum of log p(continuation tokens | context) from one full forward pass, no cache, no batching."""
    tok = backend.tokenizer
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    with torch.no_grad():
        logits = backend.model(torch.tensor([whole])).logits[0].log_softmax(-1)
    return sum(float(logits[i - 1, whole[i]]) for i in range(len(ctx), len(whole)))


@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_choice_logprobs_equal_direct_computation(tiny_model, tiny_backend, batch_size):
    backend = tiny_backend if batch_size is None else HFBackend(tiny_model, fingerprint="t", batch_size=batch_size)
    requests = [ChoiceRequest(c, CHOICES) for c in CONTEXTS]
    results = backend.score_choices(requests)
    assert len(results) == len(CONTEXTS)
    for request, result in zip(requests, results):
        expected = [direct_logprob(backend, request.context, c) for c in request.continuations]
        assert result.logprobs == pytest.approx(expected, abs=1e-4)
        assert result.continuation_tokens[1] > 1  # the multi-token path is exercised
    # Results come back in request order whatever the internal length sorting did.
    tok = backend.tokenizer
    assert [r.context_tokens for r in results] == [len(tok(c.rstrip(" ")).input_ids) for c in CONTEXTS]
    assert results[2].context_tokens > 3 * results[0].context_tokens


def test_greedy_flag_matches_argmax(tiny_backend):
    context = CONTEXTS[0]
    tok = tiny_backend.tokenizer
    with torch.no_grad():
        ids = tok(context).input_ids
        top = int(tiny_backend.model(torch.tensor([ids])).logits[0, -1].argmax())
    greedy_choice = tok.decode([top])
    result = tiny_backend.score_choices([ChoiceRequest(context, (greedy_choice, " zzzz"))])[0]
    assert result.is_greedy[0] is True and result.is_greedy[1] is False


def reference_generate(backend, prompt, max_new_tokens):
    tok = backend.tokenizer
    ids = torch.tensor([tok(prompt).input_ids])
    with torch.no_grad():
        out = backend.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("batch_size", [None, 2])
def test_batched_greedy_decoding_equals_unbatched_generate(tiny_model, tiny_backend, batch_size):
    backend = tiny_backend if batch_size is None else HFBackend(tiny_model, fingerprint="t", batch_size=batch_size)
    prompts = CONTEXTS[:3] + ["The order number is"]
    results = backend.generate([GenerateRequest(p, 12) for p in prompts])
    for prompt, result in zip(prompts, results):
        assert result.text == reference_generate(backend, prompt, 12)
        assert result.prompt_tokens == len(backend.tokenizer(prompt).input_ids)
        assert 0 < result.output_tokens <= 12


def test_stop_strings_cut_the_output(tiny_backend):
    prompt = CONTEXTS[1]
    free = reference_generate(tiny_backend, prompt, 16)
    assert len(free) > 4
    stop = free[2:4]
    result = tiny_backend.generate([GenerateRequest(prompt, 16, (stop,))])[0]
    assert result.text == free[: free.index(stop)]
    assert result.output_tokens < len(tiny_backend.tokenizer(free).input_ids) or stop in free[:4]


def test_cut_at_stop_takes_the_earliest():
    assert cut_at_stop("abc\ndef.ghi", ("\n", ".")) == "abc"
    assert cut_at_stop("abc", ("\n",)) == "abc"
    assert cut_at_stop("abc", ("",)) == "abc"


def test_chat_template_wraps_the_user_turn(tiny_backend):
    text = tiny_backend.apply_chat_template([{"role": "user", "content": "hello"}])
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
