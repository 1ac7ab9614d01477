"""A content-addressed cache of model answers, shared by every suite, candidate and process.

A request's key is the hash of everything its answer depends on: the model fingerprint (weights,
config and dtype), the adapter fingerprint (its weights' SHA-256), the exact rendered request
(context and continuations, or prompt) and the decoding parameters. Only misses reach the model, so an
unchanged suite re-runs without loading it, and a changed prompt re-evaluates only its own requests.

The store is one SQLite file in WAL mode, written batch by batch: an interrupted run keeps every batch
it finished, and pytest-xdist workers share it safely. Each miss is explained (which part of its key
is new) by comparing it with what the same example asked for last time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from evalkit.backends.base import (
    Backend,
    ChoiceRequest,
    ChoiceResult,
    GenerateRequest,
    GenerateResult,
    ModelConfig,
    Notify,
)
from evalkit.errors import shown_path
from evalkit.record import CacheInfo

SCHEMA_VERSION = 1
DATABASE = "results.sqlite"
COMMIT_EVERY = 64  # requests per backend call between commits: an interrupted run loses at most this many
PART_NAMES = {"model": "model", "adapter": "adapter", "request": "prompt", "params": "decoding parameters"}
T = TypeVar("T")  # a memoised value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, adapter TEXT NOT NULL,
    request TEXT NOT NULL, params TEXT NOT NULL, result TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_request ON entries (request);
CREATE TABLE IF NOT EXISTS origins (
    origin TEXT PRIMARY KEY, kind TEXT NOT NULL, model TEXT NOT NULL, adapter TEXT NOT NULL,
    request TEXT NOT NULL, params TEXT NOT NULL
) WITHOUT ROWID;
"""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)  # one per request of a call: no per-instance dict
class KeyParts:
    """What one answer depends on; ``key`` hashes them all."""

    kind: str  # "classify" or "generate"
    model: str
    adapter: str
    request: str  # SHA-256 of the rendered request
    params: str  # canonical JSON of the decoding parameters

    @property
    def key(self) -> str:
        return _sha256(
            "\x00".join([str(SCHEMA_VERSION), self.kind, self.model, self.adapter, self.request, self.params])
        )


def choice_parts(request: ChoiceRequest, model: str, adapter: str) -> KeyParts:
    text = json.dumps([request.context, list(request.continuations)], ensure_ascii=False)
    return KeyParts("classify", model, adapter, _sha256(text), "{}")


def generate_parts(request: GenerateRequest, model: str, adapter: str) -> KeyParts:
    params: dict[str, Any] = {"max_new_tokens": request.max_new_tokens, "stop": list(request.stop)}
    if request.temperature:  # greedy decoding ignores the seed: identical greedy requests share one answer
        params.update(temperature=request.temperature, top_p=request.top_p, seed=request.seed)
    text = request.prompt
    if request.messages:  # a served chat model answers the turns, not the prompt rendered from them
        text = json.dumps([request.prompt, [list(m) for m in request.messages]], ensure_ascii=False)
    return KeyParts("generate", model, adapter, _sha256(text), json.dumps(params, sort_keys=True))


def explain_change(before: tuple, now: KeyParts) -> str:
    """Which parts of ``now`` differ from ``before``, a stored (kind, model, adapter, request, params) row."""
    old = dict(zip(("kind", "model", "adapter", "request", "params"), before))
    changed = []
    for part, label in PART_NAMES.items():
        a, b = old[part], getattr(now, part)
        if a == b:
            continue
        if part == "params":
            a_params, b_params = json.loads(a), json.loads(b)
            diffs = [
                f"{k} {a_params.get(k, '-')} -> {b_params.get(k, '-')}"
                for k in sorted(set(a_params) | set(b_params))
                if a_params.get(k) != b_params.get(k)
            ]
            changed.append(f"{label} changed ({', '.join(diffs)})")
        elif part == "request":
            changed.append("prompt changed")
        else:
            changed.append(f"{label} changed ({(a or 'none')[:16]} -> {(b or 'none')[:16]})")
    return " and ".join(changed) or "its stored answer is gone (the cache was cleared)"


class ResultCache:
    """The SQLite store; one per process, safe to use from several threads and processes."""

    def __init__(self, folder: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DATABASE
        self._warn = warn
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ connection

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            gitignore = self.folder / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n")
            try:
                self._conn = self._open()
            except sqlite3.DatabaseError as exc:
                self._conn = self._rebuild(exc)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"cache schema version {version}, this evalkit writes {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("SELECT count(*) FROM entries WHERE key = ''").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _rebuild(self, error: Exception) -> sqlite3.Connection:
        """A damaged or foreign database is set aside and replaced by an empty one."""
        aside = self.path.with_name(f"{DATABASE}.broken-{int(time.time())}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))
        if self._warn is not None:
            self._warn(
                f"evalkit: the result cache {shown_path(self.path)} could not be read ({error}); it was moved to "
                f"{aside.name} and a new one started, so this run recomputes its answers"
            )
        return self._open()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ reads and writes

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """(result JSON, compute seconds) of every key that is stored."""
        return {key: (result, seconds) for key, result, seconds in self.stored(keys)}

    def stored(self, keys: Sequence[str]) -> Iterator[tuple[str, str, float]]:
        """(key, result JSON, compute seconds) of every key that is stored, read 500 keys at a time: a
        caller that decodes each answer as it comes never holds every answer's JSON at once."""
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            with self._lock:
                query = f"SELECT key, result, seconds FROM entries WHERE key IN ({marks})"
                found = self._connect().execute(query, chunk).fetchall()
            yield from found

    def store(self, entries: Sequence[tuple[KeyParts, str, float]]) -> None:
        """Commit (parts, result JSON, compute seconds) entries in one transaction."""
        now = time.time()
        rows = [
            (p.key, p.kind, p.model, p.adapter, p.request, p.params, result, seconds, now)
            for p, result, seconds in entries
        ]
        with self._lock:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def memoise(
        self,
        parts: KeyParts,
        compute: Callable[[], T],
        *,
        encode: Callable[[T], str] = json.dumps,
        decode: Callable[[str], T] = json.loads,
    ) -> T:
        """The value stored under ``parts`` (``decode``-d), or else ``compute()``'s, stored (``encode``-d)
        with the seconds it took, as every answer is stored with its model time."""
        stored = self.lookup([parts.key]).get(parts.key)
        if stored is not None:
            return decode(stored[0])
        started = time.perf_counter()
        value = compute()
        self.store([(parts, encode(value), time.perf_counter() - started)])
        return value

    def remember_origins(self, origins: Iterable[tuple[str, KeyParts]]) -> None:
        """Record what each example asked for, so a later miss can say what changed (``origins`` is read
        once, as the rows are written)."""
        rows = ((o, p.kind, p.model, p.adapter, p.request, p.params) for o, p in origins)
        with self._lock:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO origins VALUES (?, ?, ?, ?, ?, ?)", rows)

    def explain_miss(self, parts: KeyParts, origin: str | None) -> str:
        """Why ``parts`` is not stored: what differs from the last request of the same example, or of the
        same prompt."""
        with self._lock:
            conn = self._connect()
            if origin is not None:
                before = conn.execute(
                    "SELECT kind, model, adapter, request, params FROM origins WHERE origin = ?", (origin,)
                ).fetchone()
                if before is not None:
                    return explain_change(before, parts)
            same_prompt = conn.execute(  # the closest earlier answer: fewest differing parts, then the latest
                "SELECT kind, model, adapter, request, params FROM entries WHERE request = ? AND kind = ? "
                "ORDER BY (model != ?) + (adapter != ?) + (params != ?), created DESC LIMIT 1",
                (parts.request, parts.kind, parts.model, parts.adapter, parts.params),
            ).fetchone()
        if same_prompt is not None:
            return explain_change(same_prompt, parts)
        return "first evaluation of this example" if origin is not None else "new prompt"

    def summary(self) -> dict[str, Any]:
        """Entries, bytes on disk, and entries per (kind, model, adapter)."""
        with self._lock:
            conn = self._connect()
            rows = conn.execute("SELECT kind, model, adapter, count(*) FROM entries GROUP BY 1, 2, 3 ORDER BY 4 DESC")
            by_model = {(kind, model, adapter): n for kind, model, adapter, n in rows}
        size = sum(
            Path(f"{self.path}{suffix}").stat().st_size
            for suffix in ("", "-wal", "-shm")
            if Path(f"{self.path}{suffix}").exists()
        )
        return {"entries": sum(by_model.values()), "bytes": size, "by_model": by_model}

    def count(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT count(*) FROM entries").fetchone()[0]


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK): one writer at a time, waiting up to the busy timeout."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


@dataclass
class CacheStats:
    """Hits and misses of one candidate's requests, with the reason for each miss."""

    hits: int = 0
    misses: int = 0
    shared: int = 0  # identical requests within one call, computed once
    compute_s: float = 0.0  # model time of every answer, measured when it was computed
    reasons: Counter = field(default_factory=Counter)
    first_miss: dict[str, str] = field(default_factory=dict)  # reason -> the first example it applied to
    # a served model's requests sent this run (cache hits excluded): each one's seconds, their output tokens,
    # the wall time from the first sent to the last answered, and whether they were the server's first
    latencies: list[float] = field(default_factory=list)
    output_tokens: int = 0
    sent_s: float = 0.0
    cold: bool | None = None

    def info(self) -> CacheInfo:
        """What the run record keeps of them."""
        return CacheInfo(
            hits=self.hits,
            misses=self.misses,
            shared=self.shared,
            compute_s=round(self.compute_s, 3),
            miss_reasons=dict(self.reasons.most_common()),
            first_miss=dict(self.first_miss),
        )


class CachedBackend(Backend):
    """Any backend behind the result cache: answers come from the cache, and only misses reach the model,
    which loads on the first miss (lm-evaluation-harness's CachingLM, with SQLite and miss reasons).

    Without a cache (``cache=None``) it still computes identical requests once and measures model time.
    ``model`` overrides the model's fingerprint in the keys; ``adapter`` is the fingerprint of the adapter
    the inner backend answers through ("" for the base model)."""

    def __init__(
        self,
        cache: ResultCache | None,
        backend: Backend,
        *,
        model: str | None = None,
        adapter: str = "",
        stats: CacheStats | None = None,
    ) -> None:
        self.cache = cache
        self.inner = backend
        self.identity = backend.identity
        self._model = model
        self.adapter = adapter
        self.stats = stats if stats is not None else CacheStats()
        self.load_s = 0.0  # the inner backend loads; this wrapper has nothing of its own
        self.inner_load_s = 0.0  # seconds the inner backend spent loading during this wrapper's calls
        self.progress: Any = None  # an evalkit.progress.Progress counting this backend's answers

    @classmethod
    def from_config(cls, model: ModelConfig, base_dir: Path, *, notify: Notify | None = None) -> Backend:
        raise TypeError("a CachedBackend wraps another backend")

    @property
    def fingerprint(self) -> str:
        return self._model if self._model is not None else self.inner.identity.fingerprint

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.inner.apply_chat_template(messages)

    def memoise(
        self,
        parts: KeyParts,
        compute: Callable[[], T],
        *,
        encode: Callable[[T], str] = json.dumps,
        decode: Callable[[str], T] = json.loads,
    ) -> T:
        """:meth:`ResultCache.memoise` in this backend's cache: a value worked out from this backend's
        answers (a robustness search), computed once for ``parts``. Without a cache, ``compute()``."""
        if self.cache is None:
            return compute()
        return self.cache.memoise(parts, compute, encode=encode, decode=decode)

    def score_choices(self, requests: Sequence[ChoiceRequest]) -> list[ChoiceResult]:
        model = self.fingerprint  # one string for every key of the call
        shared: dict[tuple, tuple] = {}  # the few distinct greedy flags and token counts, one tuple each

        def one(values: list) -> tuple:
            value = tuple(values)
            return shared.setdefault(value, value)

        return self._answer(
            requests,
            lambda r: choice_parts(r, model, self.adapter),
            # in text order: requests that begin alike (a row and the content-free inputs of its own demos)
            # go to the model in the same call of COMMIT_EVERY and share their prefix; it batches by length
            lambda r: r.context,
            lambda data: ChoiceResult(
                logprobs=tuple(data["logprobs"]),
                is_greedy=one(data["is_greedy"]),
                context_tokens=data["context_tokens"],
                continuation_tokens=one(data["continuation_tokens"]),
            ),
        )

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        model = self.fingerprint
        return self._answer(
            requests,
            lambda r: generate_parts(r, model, self.adapter),
            lambda r: -len(r.prompt),  # longest first: rows of similar length decode in the same call
            lambda data: GenerateResult(**data),
        )

    def _explain_misses(
        self, missing: list[str], parts: list[KeyParts], origins: list[str | None], first: dict[str, int]
    ) -> None:
        if self.cache is None:
            self.stats.reasons["cache off"] += len(missing)
            return
        for k in missing:
            i = first[k]
            reason = self.cache.explain_miss(parts[i], origins[i])
            self.stats.reasons[reason] += 1
            self.stats.first_miss.setdefault(reason, origins[i] or "a request without an example id")

    def _answer(self, requests, parts_of, order, decode) -> list:
        parts = [parts_of(r) for r in requests]
        origins = [r.origin for r in requests]
        keys = [p.key for p in parts]
        first: dict[str, int] = {}  # each key's first request
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique = list(first)
        self.stats.shared += len(keys) - len(unique)
        answers: dict[str, tuple[Any, float]] = {}
        if self.cache is not None:  # each stored answer decoded as it is read, under the request's own key
            for k, r, s in self.cache.stored(unique):
                answers[keys[first[k]]] = (decode(json.loads(r)), s)
        missing = [k for k in unique if k not in answers]
        self.stats.hits += len(unique) - len(missing)
        self.stats.misses += len(missing)
        self._explain_misses(missing, parts, origins, first)
        if self.cache is not None:  # answered in calls of COMMIT_EVERY: the calls' order (see score_choices, generate)
            missing.sort(key=lambda k: order(requests[first[k]]))
        step = COMMIT_EVERY if self.cache is not None else max(1, len(missing))  # nothing to commit: one call, in order
        if missing:
            self.inner_load_s += self.inner.load()  # loading the model is not part of any answer's compute time
        if self.progress is not None:
            self.progress.asked(len(unique), len(unique) - len(missing))
        measuring = self.inner.measures_latency and bool(missing)
        if measuring and self.stats.cold is None:
            self.stats.cold = self.inner.requests_sent == 0
        sent = time.perf_counter()
        for ready in self.inner.answers_as_ready([requests[first[k]] for k in missing], step):
            for i, result, seconds in ready:
                answers[missing[i]] = (result, seconds)
            if measuring:
                self.stats.latencies.extend(seconds for _, _, seconds in ready)
                self.stats.output_tokens += sum(getattr(result, "output_tokens", 0) for _, result, _ in ready)
            if self.progress is not None:
                self.progress.answered(len(ready))
            if self.cache is not None:
                self.cache.store(
                    [(parts[first[missing[i]]], json.dumps(result.__dict__), seconds) for i, result, seconds in ready]
                )
        if measuring:
            self.stats.sent_s += time.perf_counter() - sent
        self.inner.requests_sent += len(missing)
        if self.cache is not None and any(o is not None for o in origins):
            self.cache.remember_origins((o, p) for o, p in zip(origins, parts) if o is not None)
        self.stats.compute_s += sum(answers[k][1] for k in keys)
        return [answers[k][0] for k in keys]
