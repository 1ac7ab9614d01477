"""Shared fixtures: a tiny randomly-initialised Llama (built from a config, in seconds) and suite helpers."""

from __future__ import annotations

import json
import os
import random
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytester points HOME at a temporary folder; pin the model cache so runs inside it reuse the converted model.
os.environ.setdefault("EVALKIT_HOME", str(__import__("evalkit.models").models.cache_root()))

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Ticket: my invoice is wrong\nCategory: billing",
    "Ticket: the app crashes on start\nCategory: technical",
    "Ticket: I cannot log in to my account\nCategory: account",
    "Ticket: where is my parcel?\nCategory: shipping",
    "Ticket: are you hiring?\nCategory: other",
    "Question: what is 2 + 3?\nAnswer: 5",
    "The order number is A12345. Please refund order 998-1234.",
]


def build_tiny_model(folder: Path, *, seed: int = 0, corpus: tuple[str, ...] = ()) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on CORPUS (and ``corpus``), saved with
    save_pretrained."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*CORPUS, *corpus] * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger random logits, so predictions differ clearly between choices
        model.lm_head.weight.mul_(20)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model: Path):
    from evalkit.backends.hf import HFBackend
    from evalkit.models import folder_fingerprint

    return HFBackend(tiny_model, fingerprint=folder_fingerprint(tiny_model))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


TICKET_ROWS = [
    {"id": "a", "text": "I was charged twice", "label": "billing"},
    {"id": "b", "text": "The app crashes on start", "label": "technical"},
    {"id": "c", "text": "I forgot my password", "label": "account"},
    {"id": "d", "text": "My parcel never arrived", "label": "shipping"},
    {"id": "e", "text": "Are you hiring?", "label": "other"},
    {"id": "f", "text": "Refund my last invoice", "label": "billing"},
]


@pytest.fixture
def suite_dir(tmp_path: Path, tiny_model: Path):
    """A folder with a tickets dataset; returns a function writing a suite file into it."""
    write_jsonl(tmp_path / "data" / "tickets.jsonl", TICKET_ROWS)

    def write(text: str, name: str = "tickets.eval.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).replace("TINY_MODEL", str(tiny_model)), encoding="utf-8")
        return path

    write.root = tmp_path
    return write


@pytest.fixture(autouse=True, scope="session")
def _run_records_out_of_the_repository(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The project's own tests evaluate suites too; keep their run record, baseline and result cache out of
    the project (and compute every answer: a cache left by an earlier run would hide the model's work)."""
    from evalkit.plugin import SESSION_KEY

    session = request.config.stash[SESSION_KEY]
    session.cache_dir = tmp_path_factory.mktemp("result-cache")
    session.reports_dir = tmp_path_factory.mktemp("reports")
    session.baseline_path = session.reports_dir / "baseline.json"  # never the project's committed baseline


# A learnable classification the random model cannot know, for the trainer's tests.
COLOURS = {
    "apple": "red",
    "cherry": "red",
    "grass": "green",
    "lime": "green",
    "sky": "blue",
    "ocean": "blue",
    "sun": "yellow",
    "lemon": "yellow",
}
ALL_LAYERS = "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]"


def colour_rows(n: int, seed: int, prefix: str, numbers: range) -> list[dict]:
    """A learnable mapping the random model cannot know: a word (with a distracting number) to a colour."""
    rng = random.Random(seed)
    words = list(COLOURS)
    return [
        {"id": f"{prefix}{i}", "text": f"{(w := rng.choice(words))} {rng.choice(numbers)}", "label": COLOURS[w]}
        for i in range(n)
    ]


COLOUR_SUITE = """\
suite: colours
model: {model}
dataset: {{path: data/test.jsonl}}
task: {{kind: classify, choices: [red, green, blue, yellow], target: label}}
train:
  colours-lora:
    output: adapters/colours-lora
    data: data/train.jsonl
    template: "Item: {{{{ text }}}}\\nColour:"
    epochs: {epochs}
    learning_rate: 1.0e-2
    batch_size: 8
    lora: {{r: 8, alpha: 16, dropout: 0.0, target_modules: {layers}}}
    validation: {{fraction: 0.1}}
    seed: 0
candidates:
  base:
    template: "Item: {{{{ text }}}}\\nColour:"
  lora:
    template: "Item: {{{{ text }}}}\\nColour:"
    adapter: colours-lora
"""


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama with a tokenizer that knows the colour words, so each choice is one token (as
    the labels of a real classification task usually are). With choices spelt out byte by byte, the 4-way
    decision hangs on a sum over several tokens, and where training lands after 20 epochs varied with the
    CPU's floating-point kernels (AVX512-BF16 against AVX2): 0.65 against 0.9 and more."""
    corpus = tuple(f"Item: {word}\nColour: {colour}" for word, colour in COLOURS.items())
    return build_tiny_model(tmp_path_factory.mktemp("colour-llama"), corpus=corpus)


@pytest.fixture
def colours(tmp_path: Path, colour_model: Path):
    """A suite folder with disjoint training (numbers 100-549) and test rows (550-999)."""
    write_jsonl(tmp_path / "data" / "train.jsonl", colour_rows(96, 1, "tr", range(100, 550)))
    write_jsonl(tmp_path / "data" / "test.jsonl", colour_rows(40, 2, "te", range(550, 1000)))

    def write(epochs: float = 20, layers: str = ALL_LAYERS, model: Path = colour_model, extra: str = "") -> Path:
        path = tmp_path / "colours.eval.yaml"
        text = COLOUR_SUITE.format(model=model, epochs=epochs, layers=layers)
        if extra:
            text = text.replace("    seed: 0\n", "    seed: 0\n" + textwrap.indent(extra, "    "))
        path.write_text(text)
        return path

    write.root = tmp_path
    return write
