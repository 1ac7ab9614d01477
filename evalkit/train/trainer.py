"""LoRA fine-tuning with peft on the Hugging Face ``Trainer``.

Two things make it faster than a generic SFT loop, without changing what is learnt:

* the loss needs logits only where a completion token is predicted, so rows are left-padded (every
  completion ends at the last position) and the model computes the vocabulary projection for the
  last ``k`` positions only (``logits_to_keep``), never for prompt or padding positions;
* rows of similar length are batched together (transformers' ``group_by_length`` sampler), so less
  compute goes to padding. Its buckets grow with the data set (up to 50 batches), so a small training
  set keeps most of its shuffling: fully length-sorted batches train measurably worse when length
  correlates with the label.

Everything else is the stock ``Trainer``: ``accelerate launch`` or ``torchrun`` run it on several
devices, checkpoints resume, and the best checkpoint by validation accuracy is kept.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from evalkit.backends.hf import HFBackend, encode_pair, peft_quietly
from evalkit.errors import TrainingError
from evalkit.models import use_safetensors
from evalkit.record import EpochRow, LossPoint, Overfitting, TrainingData, TrainingRecord, ValidationPoint
from evalkit.spec import TrainConfig
from evalkit.tasks import Scored, StandaloneServices, task_kind
from evalkit.train.examples import TrainingSet
from evalkit.train.processes import world_size

IGNORE = -100
SELECTION_METRIC = "selection"  # validation accuracy, ties broken by the lower validation loss


def selection(accuracy: float, loss: float) -> float:
    """What picks the best epoch (and the best search trial): validation accuracy, ties broken by the lower
    validation loss."""
    return accuracy - 1e-6 * loss


@dataclass(frozen=True)
class EncodedRow:
    input_ids: list[int]
    completion_length: int


def encode_rows(training: TrainingSet, tokenizer, max_length: int) -> list[EncodedRow]:
    """Tokenise prompt + completion as evaluation does; generate tasks also learn to stop (EOS)."""
    stops = task_kind(training.spec.task.kind).learns_to_stop if training.stops is None else training.stops
    add_eos = stops and tokenizer.eos_token_id is not None
    rows = []
    for i, (prompt, completion) in enumerate(zip(training.prompts, training.completions)):
        context, continuation = encode_pair(tokenizer, prompt, completion)
        if add_eos:
            continuation = [*continuation, tokenizer.eos_token_id]
        if not continuation:
            raise TrainingError(
                f"row's completion {completion!r} encodes to no tokens",
                path=training.dataset.path,
                line=training.dataset.rows[i].line,
                fix="give the row a non-empty target",
            )
        ids = (context or [_start_id(tokenizer)]) + continuation
        if len(ids) > max_length:
            raise TrainingError(
                f"row is {len(ids)} tokens long, over max_length {max_length} of adapter '{training.train.name}'",
                **training.dataset.where(training.dataset.rows[i]),
                fix="shorten the row, or raise `max_length:` in the suite's `train:` entry",
            )
        rows.append(EncodedRow(ids, len(continuation)))
    return rows


def _start_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


class CompletionCollator:
    """Left-pads a batch and right-aligns completion labels, so the loss needs only the last k logits."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        keep = max(f["completion_length"] for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), keep), IGNORE, dtype=torch.long)
        for row, f in enumerate(features):
            ids = torch.tensor(f["input_ids"], dtype=torch.long)
            input_ids[row, width - len(ids) :] = ids
            mask[row, width - len(ids) :] = 1
            c = f["completion_length"]
            labels[row, keep - c :] = ids[len(ids) - c :]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions, "completion_labels": labels}


def completion_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over completion tokens, from logits at the positions that predict them only."""
    labels = batch["completion_labels"]
    keep = labels.shape[1]
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1]  # position t predicts token t + 1
    selected = labels != IGNORE
    count = int(selected.sum())
    loss = torch.nn.functional.cross_entropy(logits[selected].float(), labels[selected], reduction="mean")
    return loss, count


class CompletionTrainer(Trainer):
    """``Trainer`` with the completion-only loss and validation measured with the suite's own metric."""

    def __init__(self, *args, validate: Callable[[Any], float] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # our loss is a batch mean: Trainer scales for accumulation
        self.validate = validate
        self.tokens_seen = 0
        self.tokens_padded = 0
        self.eval_seconds = 0.0

    def summed_over_processes(self, *values: float) -> list[float]:
        if self.args.world_size <= 1:
            return list(values)
        summed = self.accelerator.reduce(torch.tensor(values, dtype=torch.float64), reduction="sum")
        return [float(v) for v in summed]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, _ = completion_loss(model, inputs)
        if model.training:
            self.tokens_seen += int(inputs["attention_mask"].sum())
            self.tokens_padded += int(inputs["attention_mask"].numel())
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        started = time.perf_counter()
        model: Any = self.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0.0
        with torch.no_grad(), self.autocast_smart_context_manager():
            for batch in self.get_eval_dataloader(eval_dataset):
                batch = self._prepare_inputs(batch)
                loss, n = completion_loss(model, batch)
                total += float(loss) * n
                count += float(n)
            accuracy = self.validate(model) if self.validate is not None else float("nan")
        if was_training:
            model.train()
        # Under several processes each saw a shard of the validation rows: every process must see the
        # same loss, or their early-stopping and best-checkpoint decisions drift apart.
        total, count = self.summed_over_processes(total, count)
        mean_loss = total / max(1, count)
        metrics: dict[str, float] = {
            f"{metric_key_prefix}_loss": mean_loss,
            f"{metric_key_prefix}_accuracy": accuracy,
            f"{metric_key_prefix}_{SELECTION_METRIC}": selection(accuracy, mean_loss),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self.eval_seconds += time.perf_counter() - started
        return metrics


class ProgressReporter(TrainerCallback):
    """A progress bar with the running loss, and one line per epoch with validation accuracy."""

    def __init__(self, label: str, notify: Callable[[str], None] | None, bar: bool) -> None:
        self.label = label
        self.notify = notify
        self.bar_enabled = bar
        self.bar = None
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bar_enabled and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=f"training {self.label}",
                unit="step",
                dynamic_ncols=True,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=f"{state.epoch or 0:.2f}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        summary = epoch_summary(state.log_history)
        train_loss = summary[-1]["train_loss"] if summary else None
        self.say(
            f"{self.label}: epoch {state.epoch or 0.0:.0f}/{math.ceil(args.num_train_epochs)}"
            f" train loss {'-' if train_loss is None else f'{train_loss:.4f}'}"
            f" val loss {metrics['eval_loss']:.4f} val accuracy {metrics['eval_accuracy']:.3f}"
            f" ({time.perf_counter() - self.started:.0f}s)"
        )

    def say(self, line: str) -> None:
        """A line above the progress bar, or through ``notify`` without one."""
        if self.bar is not None:
            self.bar.write(line)
        elif self.notify is not None:
            self.notify(line)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def epoch_summary(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per validated epoch: the mean training loss of its steps, validation loss and accuracy."""
    rows, previous = [], 0.0
    for entry in log_history:
        if "eval_loss" not in entry:
            continue
        epoch = entry.get("epoch", 0.0)
        losses = [h["loss"] for h in log_history if "loss" in h and previous < h.get("epoch", 0.0) <= epoch]
        rows.append(
            {
                "epoch": round(epoch, 4),
                "train_loss": round(sum(losses) / len(losses), 6) if losses else None,  # no step logged
                "val_loss": round(entry["eval_loss"], 6),
                "val_accuracy": entry.get("eval_accuracy", float("nan")),
            }
        )
        previous = epoch
    return rows


def find_overfitting(epochs: Sequence[dict[str, float]], patience: int) -> dict[str, Any] | None:
    """The first epoch that ends ``patience`` epochs in which validation loss stayed above its best from
    before them while training loss fell every epoch; None when training never looked like that."""
    for i in range(patience, len(epochs)):
        window = epochs[i - patience + 1 : i + 1]
        best = min(epochs[: i - patience + 1], key=lambda e: e["val_loss"])
        rising = all(e["val_loss"] > best["val_loss"] for e in window)
        falling = all(
            a["train_loss"] is not None and b["train_loss"] is not None and b["train_loss"] < a["train_loss"]
            for a, b in zip(epochs[i - patience : i], window)
        )
        if rising and falling:
            return {
                "epoch": epochs[i]["epoch"],
                "train_loss": epochs[i]["train_loss"],
                "val_loss": epochs[i]["val_loss"],
                "best_epoch": best["epoch"],
                "best_val_loss": best["val_loss"],
                "patience": patience,
            }
    return None


def overfitting_message(label: str, found: dict[str, Any]) -> str:
    return (
        f"{label}: over-fitting at epoch {found['epoch']:g}: validation loss {found['val_loss']:.4f} has stayed above "
        f"its best ({found['best_val_loss']:.4f}, epoch {found['best_epoch']:g}) for {found['patience']} epochs while "
        f"training loss fell to {found['train_loss']:.4f}"
    )


class OverfittingWatch(TrainerCallback):
    """Says, as soon as it shows, that validation loss rises while training loss keeps falling."""

    def __init__(self, label: str, patience: int, say: Callable[[str], None]) -> None:
        self.label = label
        self.patience = patience
        self.say = say
        self.found: dict[str, Any] | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.found is None:
            self.found = find_overfitting(epoch_summary(state.log_history), self.patience)
            if self.found is not None and state.is_world_process_zero:
                self.say(overfitting_message(self.label, self.found))


@dataclass
class FitResult:
    """One training run: the model it left, and what it measured (the adapter's training record, still
    without the identity and weights that publishing it adds)."""

    model: Any  # the PeftModel holding the best (or last) adapter weights
    tokenizer: Any
    record: TrainingRecord
    is_main_process: bool = True  # False on the other processes of a distributed run


def _lora_config(config: TrainConfig, model, training: TrainingSet):
    from peft import LoraConfig

    linear_names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and "lm_head" not in name
        }
    )
    missing = [m for m in config.lora.target_modules if m not in linear_names]
    if missing:
        raise TrainingError(
            f"adapter '{training.train.name}': the base model has no linear layer named {', '.join(missing)}",
            path=training.spec.path,
            line=training.train.line,
            fix=f"set lora.target_modules to some of: {', '.join(linear_names)}",
        )
    alpha: Any = config.lora.alpha  # peft annotates an int; a float scales as well
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint a run can resume from. The Trainer writes ``trainer_state.json`` after the
    weights, optimizer, scheduler and RNG state, so a checkpoint without a readable one was cut short by a
    kill; such folders are removed."""
    if not checkpoint_dir.is_dir():
        return None
    found = [p for p in checkpoint_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    for folder in sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return str(folder)
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
    return None


def _training_arguments(
    config: TrainConfig, train_rows: int, checkpoint_dir: Path, validating: bool
) -> tuple[TrainingArguments, int]:
    """The Hugging Face Trainer's arguments for one adapter, and the optimiser steps they make."""
    steps_per_epoch = math.ceil(train_rows / (config.batch_size * config.gradient_accumulation_steps))
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.precision == "bfloat16",
        # bf16 autocast on the CPU; and several CPU processes (torchrun, accelerate launch) train over gloo
        use_cpu=not torch.cuda.is_available() and (config.precision == "bfloat16" or world_size() > 1),
        eval_strategy="epoch" if validating else "no",
        save_strategy="epoch",
        save_total_limit=2 if validating else 1,
        load_best_model_at_end=validating,
        metric_for_best_model=SELECTION_METRIC if validating else None,
        greater_is_better=True,
        logging_steps=max(1, total_steps // 50),
        logging_first_step=True,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # see the module docstring
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every forward pass
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return args, total_steps


def _curves(history: Sequence[dict[str, Any]]) -> tuple[list[LossPoint], list[ValidationPoint]]:
    """The training loss of each logged step, and each validation, from the Trainer's log history."""
    loss_curve = [
        LossPoint(step=h["step"], epoch=round(h.get("epoch", 0.0), 4), loss=h["loss"]) for h in history if "loss" in h
    ]
    validation = [
        ValidationPoint(
            epoch=round(h.get("epoch", 0.0), 4), step=h["step"], loss=h["eval_loss"], accuracy=h["eval_accuracy"]
        )
        for h in history
        if "eval_accuracy" in h
    ]
    return loss_curve, validation


def _described(training: TrainingSet, train_indices: list[int], val_indices: list[int]) -> dict[str, Any]:
    """The record's fields that name what was trained: the adapter, its suite, its rows, its settings."""
    train_spec = training.train
    return {
        "adapter": train_spec.name,
        "suite": training.spec.name,
        "base_model": training.spec.model.name,
        "task": training.spec.task.kind,
        "data": TrainingData(
            path=train_spec.data,
            sha256=training.dataset.content_hash,
            rows=len(training),
            train_rows=len(train_indices),
            validation_rows=len(val_indices),
        ),
        "template_sha256": training.prepared.template.sha256,
        "config": train_spec.model_dump(),
    }


def _fit_result(
    trainer: CompletionTrainer,
    output: Any,
    tokenizer: Any,
    model: Any,
    described: dict[str, Any],
    *,
    last: str | None,
    total_steps: int,
    wall: float,
    found: dict[str, Any] | None,
) -> FitResult:
    """What one training run produced: the best model, its curves, and what it cost."""
    trainable, total = model.get_nb_trainable_parameters()
    train_seconds = max(1e-9, wall - trainer.eval_seconds)
    tokens_seen, tokens_padded = trainer.summed_over_processes(trainer.tokens_seen, trainer.tokens_padded)
    history = list(trainer.state.log_history)
    loss_curve, validation = _curves(history)
    best_checkpoint = trainer.state.best_model_checkpoint
    best_step = int(best_checkpoint.rsplit("-", 1)[1]) if best_checkpoint else None
    record = TrainingRecord(
        **described,
        loss_curve=loss_curve,
        validation=validation,
        epochs=[EpochRow(**e) for e in epoch_summary(history)],
        overfitting=Overfitting(**found) if found is not None else None,
        best_validation_accuracy=max((v.accuracy for v in validation), default=None),
        best_checkpoint=Path(best_checkpoint).name if best_checkpoint else None,
        best_epoch=next((v.epoch for v in validation if v.step == best_step), None),
        processes=world_size(),
        global_steps=output.global_step,
        epochs_run=round(float(trainer.state.epoch or 0.0), 4),
        stopped_early=output.global_step < total_steps,
        resumed_from=Path(last).name if last else None,
        train_seconds=round(train_seconds, 3),
        tokens_per_second=round(tokens_seen / train_seconds, 1),
        padding_fraction=round(1 - tokens_seen / max(1, tokens_padded), 4),
        trainable_parameters=int(trainable),
        total_parameters=int(total),
    )
    return FitResult(trainer.model, tokenizer, record, trainer.is_world_process_zero())


MONITORS = {"tensorboard": ("tensorboard", "TensorBoardCallback"), "mlflow": ("mlflow", "MLflowCallback")}


def monitoring_callbacks(training: TrainingSet, folder: Path | None) -> list[TrainerCallback]:
    """The Hugging Face Trainer's own TensorBoard / MLflow integrations, writing under ``folder``."""
    import importlib.util

    from transformers.integrations import integration_utils

    callbacks: list[TrainerCallback] = []
    for tool in training.train.report_to:
        package, name = MONITORS[tool]
        if importlib.util.find_spec(package) is None:
            raise TrainingError(
                f"adapter '{training.train.name}' reports to {tool}, which is not installed",
                path=training.spec.path,
                line=training.train.line,
                fix=f"pip install {package} (or pip install 'evalkit[monitoring]'), or drop it from `report_to:`",
            )
        if folder is None:
            continue
        callback = getattr(integration_utils, name)()
        if tool == "tensorboard":
            callback.logging_dir = str(folder / "tensorboard")
        else:  # MLflow reads its store from the environment; a team's own tracking server wins
            os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "mlruns").resolve().as_uri())
            os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", training.train.name)
        callbacks.append(callback)
    return callbacks


def _peft_model(training: TrainingSet, model_path: Path) -> Any:
    """The base model in float32 with a freshly initialised LoRA adapter (seeded: reproducible)."""
    from peft import get_peft_model

    config = training.train
    set_seed(config.seed)  # before the adapter exists, so its initial weights are reproducible
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path), dtype=torch.float32, use_safetensors=use_safetensors(training.spec.model.allow_pickle)
    )
    model.config.use_cache = False
    with peft_quietly():
        return get_peft_model(model, _lora_config(config, model, training))


def scored_rows(training: TrainingSet, tokenizer: Any, indices: list[int]) -> Callable[[Any], Scored]:
    """Scores a model (one in training, or just trained) on the rows ``indices`` with the suite's task."""
    prepared = training.prepared.subset(indices)
    prepared.services = StandaloneServices(training.spec.path.parent)  # a judge-graded suite's judge

    def score(peft_model) -> Scored:
        backend = HFBackend.from_model(peft_model, tokenizer, fingerprint="training")
        return task_kind(training.spec.task.kind).score(prepared, backend)

    return score


def _validator(training: TrainingSet, tokenizer: Any, val_indices: list[int]) -> Callable[[Any], float]:
    """Scores the model in training on the validation rows with the suite's own metric."""
    score = scored_rows(training, tokenizer, val_indices)
    return lambda peft_model: float(score(peft_model).metrics["accuracy"])


def _validation_callbacks(config: TrainConfig, watch: OverfittingWatch, early_stopping: bool) -> list[TrainerCallback]:
    """The over-fitting watch, and early stopping when the entry sets a patience."""
    patience = config.validation.early_stopping_patience
    if early_stopping and patience:
        return [watch, EarlyStoppingCallback(early_stopping_patience=patience)]
    return [watch]


def fit(
    training: TrainingSet,
    model_path: Path,
    train_indices: list[int],
    val_indices: list[int],
    checkpoint_dir: Path,
    *,
    resume: bool = True,
    early_stopping: bool = True,
    notify: Callable[[str], None] | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    label: str | None = None,
    monitor_dir: Path | None = None,
) -> FitResult:
    """Train one LoRA adapter on ``train_indices``, validating on ``val_indices`` after every epoch.
    ``monitor_dir``: where the tools in the entry's ``report_to`` write their curves."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    config = training.train
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    encoded = encode_rows(training, tokenizer, config.max_length)

    def as_dataset(indices: list[int]) -> list[dict[str, Any]]:
        # A list of dicts is a map-style dataset; the length-grouped sampler reads each row's input_ids.
        return [{"input_ids": encoded[i].input_ids, "completion_length": encoded[i].completion_length} for i in indices]

    model = _peft_model(training, model_path)
    validating = bool(val_indices)
    args, total_steps = _training_arguments(config, len(train_indices), checkpoint_dir, validating)
    reporter = ProgressReporter(label or training.train.name, notify, progress_bar)
    watch = OverfittingWatch(reporter.label, config.validation.early_stopping_patience or 2, reporter.say)
    extra = [reporter, *callbacks, *monitoring_callbacks(training, monitor_dir)]
    if validating:
        extra += _validation_callbacks(config, watch, early_stopping)
    trainer = CompletionTrainer(
        model=model,
        args=args,
        train_dataset=as_dataset(train_indices),
        eval_dataset=as_dataset(val_indices) if validating else None,
        data_collator=CompletionCollator(tokenizer.pad_token_id),
        callbacks=extra,
        validate=_validator(training, tokenizer, val_indices) if validating else None,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    last = last_complete_checkpoint(checkpoint_dir) if resume else None
    if last is not None and notify is not None:
        notify(f"{training.train.name}: resuming from {Path(last).name}")
    started = time.perf_counter()
    output = _train_quietly(trainer, last)
    wall = time.perf_counter() - started
    described = _described(training, train_indices, val_indices)
    return _fit_result(
        trainer, output, tokenizer, model, described, last=last, total_steps=total_steps, wall=wall, found=watch.found
    )


def _train_quietly(trainer: CompletionTrainer, resume_from: str | None) -> Any:
    """``trainer.train()``, without the notes transformers' checkpoint housekeeping logs for its developers."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with peft_quietly():
            return trainer.train(resume_from_checkpoint=resume_from)
    finally:
        hf_logging.set_verbosity(verbosity)
