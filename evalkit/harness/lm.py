"""lm-eval's ``LM`` interface on top of an evalkit backend: lm-eval builds the requests, evalkit answers them
(shared-prefix scoring, the result cache, adapters, served models).

Registered in lm-eval's model registry as ``evalkit``, so lm-eval's own command runs it:
``evalkit lm-eval run --model evalkit --model_args name=smollm2-135m-instruct --tasks arc_easy``
(``evalkit lm-eval`` is lm-eval's CLI with this module imported; lm_eval finds models only by import).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from evalkit.backends.base import Backend, ChoiceRequest, GenerateRequest, ModelConfig

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HF backend's default


@register_model("evalkit")
class EvalkitLM(LM):
    """Answers lm-eval's ``loglikelihood`` and ``generate_until`` requests through an evalkit backend.

    Requests that share a context (a multiple-choice question's choices) go out as one
    :class:`ChoiceRequest`, so the context is computed once. ``loglikelihood_rolling`` (perplexity tasks)
    is not offered: evalkit's backends score continuations after a context."""

    def __init__(self, backend: Backend, *, model_name: str = "evalkit") -> None:
        super().__init__()
        self.backend = backend
        self.model_name = model_name
        self.requests_seen: list[Any] = []  # (request type, args) in the order lm-eval sent them
        self.tokens = {"prompt": 0, "output": 0}  # of the answers: contexts and continuations; prompts and outputs

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> EvalkitLM:
        """``--model_args name=smollm2-135m-instruct,dtype=float32,backend=hf,cache=DIR``: a model block of an
        evalkit suite, answered behind the result cache in ``cache`` when given."""
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> EvalkitLM:
        from evalkit.backends import open_backend

        args = {k: v for k, v in dict(arg_dict).items() if v is not None}
        cache_dir = args.pop("cache", None)
        adapter = args.pop("adapter", None)
        model = ModelConfig.model_validate(args)
        backend: Backend = open_backend(model, Path.cwd())
        if adapter is not None:
            backend = backend.with_adapter(str(adapter), Path(str(adapter)))
        if cache_dir is not None:
            from evalkit.cache import CachedBackend, ResultCache

            backend = CachedBackend(ResultCache(Path(str(cache_dir))), backend)
        return cls(backend, model_name=model.name)

    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.backend.apply_chat_template(chat_history)

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        grouped: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            context, continuation = request.args
            self.requests_seen.append(("loglikelihood", (context, continuation)))
            grouped.setdefault(context, []).append(index)
        asked = [
            ChoiceRequest(context, tuple(requests[i].args[1] for i in indices), origin=_origin(requests[indices[0]]))
            for context, indices in grouped.items()
        ]
        answers: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for (_context, indices), result in zip(grouped.items(), self.backend.score_choices(asked)):
            self.tokens["prompt"] += result.context_tokens + sum(result.continuation_tokens)
            for position, index in enumerate(indices):
                answers[index] = (float(result.logprobs[position]), bool(result.is_greedy[position]))
        return answers

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError(
            "evalkit's backends score continuations after a context; rolling-window perplexity tasks "
            "(loglikelihood_rolling) run on lm-eval's own hf backend"
        )

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        asked = []
        for request in requests:
            context, gen_kwargs = request.args
            self.requests_seen.append(("generate_until", (context, dict(gen_kwargs))))
            asked.append(generate_request(context, gen_kwargs, origin=_origin(request)))
        results = self.backend.generate(asked)
        self.tokens["prompt"] += sum(r.prompt_tokens for r in results)
        self.tokens["output"] += sum(r.output_tokens for r in results)
        return [result.text for result in results]


def generate_request(context: str, gen_kwargs: dict[str, Any], origin: str | None = None) -> GenerateRequest:
    """lm-eval's generation settings as an evalkit request: ``until`` stops, ``max_gen_toks`` tokens,
    greedy unless ``do_sample`` with a temperature."""
    until = gen_kwargs.get("until") or ()
    stops = (until,) if isinstance(until, str) else tuple(until)
    sampled = bool(gen_kwargs.get("do_sample")) and float(gen_kwargs.get("temperature") or 0.0) > 0
    return GenerateRequest(
        prompt=context,
        max_new_tokens=int(gen_kwargs.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS),
        stop=stops,
        temperature=float(gen_kwargs.get("temperature") or 0.0) if sampled else 0.0,
        top_p=float(gen_kwargs.get("top_p") or 1.0) if sampled else 1.0,
        origin=origin,
    )


def _origin(request: Any) -> str | None:
    task, doc_id = getattr(request, "task_name", None), getattr(request, "doc_id", None)
    return f"{task}/{doc_id}" if task is not None else None
