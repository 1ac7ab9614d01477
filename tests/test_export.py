"""`evalkit export`: a LoRA adapter converted by llama.cpp's own converter, served by a real llama-cpp-python
server beside its base model, answers as the same adapter does in process."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.llama_server import ALIAS, LlamaServer, gguf_path

PROMPTS = [
    "Ticket: I was charged twice for my subscription this month.\nCategory:",
    "Ticket: The app crashes when I open the settings page.\nCategory:",
    "Ticket: I cannot log in since I changed my password.\nCategory:",
    "Ticket: My parcel has been stuck in transit for a week.\nCategory:",
    "Ticket: Do you offer discounts for schools?\nCategory:",
    "Ticket: Please send me last month's invoice again.\nCategory:",
    "Ticket: The export button gives an error 500.\nCategory:",
    "Ticket: How do I change the email address of my account?\nCategory:",
    "Ticket: The courier left the box at the wrong address.\nCategory:",
    "Ticket: Are you hiring engineers in Berlin?\nCategory:",
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter on the embedded model's attention and MLP layers, with seeded non-zero weights (so it
    changes the answers), saved as peft saves a trained one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from evalkit.models import resolve_model

    base = resolve_model(ALIAS).path
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in peft_model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.02)
    folder = tmp_path_factory.mktemp("adapter") / "random-lora"
    peft_model.save_pretrained(str(folder))
    return base, folder


def _complete(url: str, model: str, prompt: str) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": 6, "temperature": 0, "repeat_penalty": 1.0}
    request = urllib.request.Request(
        f"{url}/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)["choices"][0]["text"]


@pytest.mark.integration
def test_an_exported_adapter_served_by_llama_cpp_answers_as_the_adapter_in_process(adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalkit.export import export_adapter

    base, folder = adapter
    exported = export_adapter(folder, base, tmp_path / "random-lora.gguf", outtype="f32")
    assert exported.read_bytes()[:4] == b"GGUF" and not (tmp_path / "random-lora.gguf.partial").exists()

    server = LlamaServer(
        tmp_path / "server.log",
        models=[
            {"model": str(gguf_path()), "model_alias": ALIAS},
            {"model": str(gguf_path()), "model_alias": "random-lora@1", "lora_path": str(exported)},
        ],
    ).start()
    try:
        served = [_complete(server.url, "random-lora@1", p) for p in PROMPTS]
        served_base = [_complete(server.url, ALIAS, p) for p in PROMPTS]
    finally:
        server.stop()

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(folder))
    in_process = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
        in_process.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    first_words = [(s.split() or [""])[0] == (p.split() or [""])[0] for s, p in zip(served, in_process)]
    print(
        f"served adapter agrees with the in-process adapter on the first word of {sum(first_words)} of {len(PROMPTS)}"
    )
    # Q4_1 weights and 8-bit activations against float32, on an adapter of random weights (near-ties are
    # common, and llama.cpp's threaded sums vary from run to run): 9 or 10 of 10 in most runs, fewer in some
    assert sum(first_words) >= 7, list(zip(served, in_process))
    assert served != served_base  # the server answered through the adapter, not the base alone
