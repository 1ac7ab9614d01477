"""The `openai` backend against a real OpenAI-compatible server: llama-cpp-python's, serving the embedded
default model's own GGUF file. A fault-injecting proxy in front of it counts requests and plants 429s,
500s and stalls. The first tests need no server (the allow-list and key rules)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.llama_server import ALIAS, FaultProxy, LlamaServer, error_body

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "suites" / "data"
CHOICES = ["billing", "technical", "account", "shipping", "other"]
KEY = "sk-evalkit-planted-9f3c1a7e"


def served_suite(url: str, *, task: str, candidates: str, rows: int, model_extra: str = "") -> str:
    """A suite on the demo's data whose model is the server at ``url``."""
    dataset = "orders" if "order_id" in task else "tickets"
    model = (
        f"backend: openai\nname: {ALIAS}\nbase_url: {url}\ntokenizer: {ALIAS}\n"
        f"concurrency: 2\nmax_retries: 2\ntimeout_s: 30\n"
        "extra_body: {repeat_penalty: 1.0}\n"  # llama.cpp penalises repeats unless told not to; greedy is greedy
        f"{model_extra}"
    )
    return (
        "suite: served\n"
        f"model:\n{textwrap.indent(model, '  ')}"
        f"dataset:\n  path: {DATA}/{dataset}_test.jsonl\n  limit: {rows}\n"
        f"task:\n{textwrap.indent(task, '  ')}"
        f"candidates:\n{textwrap.indent(candidates, '  ')}"
    )


TICKETS_CLASSIFY = f"kind: classify\nchoices: {json.dumps(CHOICES)}\ntarget: label\n"
ORDERS_GENERATE = 'kind: generate\ntarget: order_id\nmax_new_tokens: 24\nstop: ["\\n"]\nscorer: exact_match\n'
INLINE = 'inline:\n  template: "Ticket: {{ text }}\\nCategory:"\n  chat: false\n'
ORDERS_ZERO_SHOT = f"zero_shot:\n  prompt: {REPO}/prompts/orders/zero_shot.j2\n"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``pytest served.eval.yaml`` in a subprocess, as a user runs it."""
    return pytester.runpytest_subprocess("served.eval.yaml", "-p", "no:cacheprovider", *args)


def examples(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "reports/latest/examples.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- without a server


def test_a_base_url_off_the_allow_list_is_refused_before_anything_is_sent(pytester, monkeypatch):
    monkeypatch.delenv("EVALKIT_ALLOWED_HOSTS", raising=False)
    suite = served_suite("http://evals.example.com:8080/v1", task=ORDERS_GENERATE, candidates=ORDERS_ZERO_SHOT, rows=2)
    pytester.makefile(".eval.yaml", served=suite)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*host 'evals.example.com' of base_url http://evals.example.com:8080/v1 is not on evalkit's allow-list, "
            "so nothing (no prompt, no key) is sent to it",
            "*fix: if you trust it, allow it outside the suite: EVALKIT_ALLOWED_HOSTS=evals.example.com in the "
            "environment, or `evalkit_allowed_hosts = evals.example.com` in the ?pytest? ini section",
        ]
    )
    # Allowed from the ini file, the request goes out (and finds no such host on this closed network).
    pytester.makeini("[pytest]\nevalkit_allowed_hosts = *.example.com\n")
    allowed = run(pytester)
    allowed.assert_outcomes(failed=1)
    allowed.stdout.fnmatch_lines(["*cannot reach http://evals.example.com:8080/v1/models*"])
    assert "allow-list" not in allowed.stdout.str()


def test_a_suite_that_holds_a_key_is_refused_at_its_line_without_showing_it(pytester):
    suite = served_suite(
        "http://127.0.0.1:9/v1",
        task=ORDERS_GENERATE,
        candidates=ORDERS_ZERO_SHOT,
        rows=2,
        model_extra=f"api_key: {KEY}\n",
    )
    pytester.makefile(".eval.yaml", served=suite)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "served.eval.yaml:11: model.api_key: a suite must not hold a key (suites are read and shared in pull "
            "requests); put the key in an environment variable and name it with `api_key_env: EVALKIT_API_KEY`",
            "  fix: `api_key:` means: refused: a key written into a suite; the suite names its variable with api_key_env",
        ]
    )
    assert KEY not in result.stdout.str() + result.stderr.str()


def test_a_key_variable_that_is_not_set_is_named(pytester, monkeypatch):
    monkeypatch.delenv("EVALKIT_TEST_KEY", raising=False)
    suite = served_suite(
        "http://127.0.0.1:9/v1",
        task=ORDERS_GENERATE,
        candidates=ORDERS_ZERO_SHOT,
        rows=2,
        model_extra="api_key_env: EVALKIT_TEST_KEY\n",
    )
    pytester.makefile(".eval.yaml", served=suite)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the suite reads the server's key from $EVALKIT_TEST_KEY, which is not set",
            "*fix: export EVALKIT_TEST_KEY=... (in CI: from the job's secrets)",
        ]
    )


def test_without_a_tokenizer_the_continuation_is_found_from_the_text_offsets():
    from evalkit.backends.served import Echo, continuation_by_offsets
    from evalkit.errors import ModelError

    # What a server echoes for "Ticket: x\nCategory: billing" (the first token has no log-probability).
    echo = Echo(
        tokens=["Ticket", ":", " x", "\n", "Category", ":", " bill", "ing"],
        logprobs=[None, -1.0, -5.0, -0.5, -2.0, -0.1, -1.5, -0.25],
        offsets=[0, 6, 7, 9, 10, 18, 19, 24],
        top=[None, {":": -1.0}, {" y": -1.0}, {"\n": -0.5}, {"Category": -2.0}, {":": -0.1}, {" bill": -1.5},
             {"ing": -0.25}],
    )  # fmt: skip
    assert continuation_by_offsets(echo, "Ticket: x\nCategory:", " billing") == (-1.75, True, 6, 2)
    with pytest.raises(ModelError, match=r"cannot tell where the continuation ' shipping' starts"):
        continuation_by_offsets(echo, "Ticket: x\nCategory:", " shipping")


@pytest.mark.parametrize(
    ("url", "allowed", "refused_host"),
    [
        ("http://127.0.0.1:8080/v1", "", None),
        ("http://[::1]:8080/v1", "", None),
        ("http://localhost/v1", "", None),
        ("https://llm.staging.example.com/v1", "*.staging.example.com", None),
        ("http://10.0.0.7:8000/v1", "10.0.0.7:8000", None),
        ("http://10.0.0.7:9000/v1", "10.0.0.7:8000", "10.0.0.7"),
        ("https://api.example.org/v1", "*.staging.example.com", "api.example.org"),
    ],
)
def test_the_allow_list_matches_hosts_and_ports(monkeypatch, url, allowed, refused_host):
    from evalkit.backends.hosts import check_allowed
    from evalkit.errors import ModelError

    monkeypatch.setenv("EVALKIT_ALLOWED_HOSTS", allowed)
    if refused_host is None:
        check_allowed(url)
    else:
        with pytest.raises(ModelError, match=f"host '{refused_host}' of base_url .* is not on evalkit's allow-list"):
            check_allowed(url)


def test_credentials_in_a_base_url_never_reach_a_message():
    from evalkit.backends.hosts import check_allowed, without_credentials
    from evalkit.errors import ModelError

    assert without_credentials("https://user:s3cret@llm.example.com:8443/v1") == "https://llm.example.com:8443/v1"
    with pytest.raises(ModelError) as refused:
        check_allowed("https://user:s3cret@llm.example.com:8443/v1")
    assert "s3cret" not in refused.value.render()


# ---------------------------------------------------------------------- against the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log").start()
    yield instance
    instance.stop()


@pytest.fixture
def proxy(server):
    instance = FaultProxy(server.url)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def hf_backend():
    from evalkit.backends.hf import HFBackend
    from evalkit.models import resolve_model

    resolved = resolve_model(ALIAS)
    return HFBackend(resolved.path, fingerprint=resolved.fingerprint)


@pytest.mark.integration
def test_classify_through_the_server_agrees_with_the_in_process_model_given_the_same_tokens(
    pytester, proxy, hf_backend
):
    from evalkit.backends.base import ChoiceRequest

    rows = 20
    pytester.makefile(".eval.yaml", served=served_suite(proxy.url, task=TICKETS_CLASSIFY, candidates=INLINE, rows=rows))
    first = run(pytester)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*classify prompts are sent after the BOS token '<|im_start|>'"])
    served_rows = examples(pytester.path)
    served_predictions = [row["output"] for row in served_rows]
    requests = [ChoiceRequest("<|im_start|>" + row["prompt"], tuple(" " + c for c in CHOICES)) for row in served_rows]
    local = hf_backend.score_choices(requests)  # the same tokens: the BOS the served path sends, then the prompt
    differences, disagreements = [], []
    for row, answer in zip(served_rows, local):
        served_scores = [row["details"]["logprobs"][c] for c in CHOICES]
        differences += [abs(a - b) for a, b in zip(served_scores, answer.logprobs)]
        ranked = sorted(answer.logprobs, reverse=True)
        if row["output"] != CHOICES[answer.logprobs.index(ranked[0])]:
            disagreements.append(ranked[0] - ranked[1])
    agreement = 1 - len(disagreements) / rows
    print(f"agreement {agreement:.3f}, mean |log-probability difference| {sum(differences) / len(differences):.3f}")
    # llama.cpp multiplies the quantised weights with 8-bit-quantised activations; evalkit's hf backend
    # computes in float32 with the same weights de-quantised. The two differ by about a tenth of a nat per
    # choice, so they may only disagree where the in-process choice is within that noise of a tie.
    assert sum(differences) / len(differences) < 0.2
    assert all(margin < 0.5 for margin in disagreements), disagreements
    assert agreement >= 0.85, (served_predictions, disagreements)

    # A warm re-run asks the server only who it is.
    before = len(proxy.seen)
    again = run(pytester)
    again.assert_outcomes(passed=1)
    assert [(method, path) for _, method, path, _ in proxy.seen[before:]] == [("GET", "/v1/models")]
    again.stdout.fnmatch_lines([f"*{rows} of {rows} requests answered from it (100%), 0 computed*"])

    # A new pin of the served model's identity is a new model: nothing is reused.
    suite = pytester.path / "served.eval.yaml"
    suite.write_text(suite.read_text().replace("timeout_s: 30\n", 'timeout_s: 30\n  revision: "2026-12-01"\n'))
    pinned = run(pytester, "--evalkit-limit", "2")
    pinned.assert_outcomes(passed=1)
    pinned.stdout.fnmatch_lines(["*0 of 2 requests answered from it (0%), 2 computed*"])
    record = json.loads((pytester.path / "reports/latest/results.json").read_text())
    reasons = record["suites"]["served"]["inline"]["cache"]["miss_reasons"]
    assert list(reasons) == [next(r for r in reasons if r.startswith("model changed"))] and sum(reasons.values()) == 2


@pytest.mark.integration
def test_generate_through_the_server_agrees_with_the_in_process_model(pytester, proxy, hf_backend):
    from evalkit.backends.base import GenerateRequest

    rows = 20
    pytester.makefile(
        ".eval.yaml", served=served_suite(proxy.url, task=ORDERS_GENERATE, candidates=ORDERS_ZERO_SHOT, rows=rows)
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    served_rows = examples(pytester.path)
    local = hf_backend.generate([GenerateRequest(row["prompt"], 24, ("\n",)) for row in served_rows])
    agreement = sum(row["output"] == answer.text for row, answer in zip(served_rows, local)) / rows
    print(f"generated texts agree on {agreement:.3f} of {rows} rows")
    assert agreement >= 0.90, [(row["output"], answer.text) for row, answer in zip(served_rows, local)]
    assert len(proxy.completions()) == rows


@pytest.mark.integration
def test_a_choice_scored_generate_candidate_runs_through_chat_completions(pytester, proxy):
    task = (
        f"kind: generate\ntarget: label\nmax_new_tokens: 8\nscorer: {{name: choice, choices: {json.dumps(CHOICES)}}}\n"
    )
    candidate = (
        "chat_choice:\n"
        '  template: "Route this support ticket to one team: billing, technical, account, shipping or other.\\n'
        'Ticket: {{ text }}\\nAnswer with the team only."\n'
        "  chat: true\n"
        "  system: You route customer support tickets.\n"
    )
    pytester.makefile(".eval.yaml", served=served_suite(proxy.url, task=task, candidates=candidate, rows=6))
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert [path for _, _, path, _ in proxy.completions()] == ["/v1/chat/completions"] * 6
    rows = examples(pytester.path)
    assert all(row["output"].strip() for row in rows)
    assert all(row["details"].get("extracted") in (*CHOICES, None) for row in rows)
    # The report shows the prompt as the model's own chat template renders it.
    assert rows[0]["prompt"].startswith("<|im_start|>system\nYou route customer support tickets.<|im_end|>")


@pytest.mark.integration
def test_429_500_and_a_stalled_connection_are_retried_and_a_lasting_failure_names_the_server(pytester, proxy):
    pytester.makefile(
        ".eval.yaml",
        served=served_suite(proxy.url, task=ORDERS_GENERATE, candidates=ORDERS_ZERO_SHOT, rows=2)
        .replace("concurrency: 2", "concurrency: 1")
        .replace("timeout_s: 30", "timeout_s: 2")
        .replace("max_retries: 2", "max_retries: 3"),
    )
    proxy.faults.extend(
        [
            ("status", 429, {"Retry-After": "1", "Content-Type": "application/json"}, error_body("slow down")),
            ("status", 500, {"Content-Type": "application/json"}, error_body("worker restarting")),
            ("stall", 4),
        ]
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    times = [t for t, *_ in proxy.completions()]
    assert len(times) == 5  # 3 faults, then the two rows
    assert times[1] - times[0] >= 1.0  # Retry-After honoured
    assert times[3] - times[2] >= 2.0  # the stalled request timed out before its retry

    proxy.faults.extend([("status", 500, {"Content-Type": "application/json"}, error_body("out of memory"))] * 4)
    failed = run(pytester, "--evalkit-no-cache")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(
        [
            f"*{proxy.url}/completions answered 500: out of memory",
            "*fix: the server kept failing after 3 retries: raise `max_retries:` or lower `concurrency:`",
        ]
    )


@pytest.mark.integration
def test_a_server_killed_mid_run_loses_no_finished_answer(pytester, tmp_path):
    first = LlamaServer(tmp_path / "first.log").start()
    proxy = FaultProxy(first.url)
    try:
        pytester.makefile(
            ".eval.yaml",
            served=served_suite(proxy.url, task=ORDERS_GENERATE, candidates=ORDERS_ZERO_SHOT, rows=10)
            .replace("concurrency: 2", "concurrency: 1")
            .replace("max_retries: 2", "max_retries: 1"),
        )
        proxy.faults.extend([("call", lambda: None)] * 6 + [("call", first.kill)])
        broken = run(pytester)
        broken.assert_outcomes(failed=1)
        broken.stdout.fnmatch_lines([f"*cannot reach {proxy.url}/completions*"])
        second = LlamaServer(tmp_path / "second.log").start()
        try:
            proxy.upstream = second.url.removesuffix("/v1")
            before = len(proxy.completions())
            rerun = run(pytester)
            rerun.assert_outcomes(passed=1)
            assert len(proxy.completions()) - before == 4  # the six answered before the kill are not asked again
            rerun.stdout.fnmatch_lines(["*6 of 10 requests answered from it (60%), 4 computed*"])
        finally:
            second.stop()
    finally:
        proxy.close()
        first.stop()


@pytest.mark.integration
def test_a_planted_key_reaches_the_server_and_no_output(pytester, tmp_path, monkeypatch):
    guarded = LlamaServer(tmp_path / "guarded.log", api_key=KEY).start()
    proxy = FaultProxy(guarded.url)
    monkeypatch.setenv("EVALKIT_TEST_KEY", KEY)
    try:
        pytester.makefile(
            ".eval.yaml",
            served=served_suite(
                proxy.url,
                task=ORDERS_GENERATE,
                candidates=ORDERS_ZERO_SHOT,
                rows=3,
                model_extra="api_key_env: EVALKIT_TEST_KEY\n",
            ),
        )
        ok = run(pytester, "--junitxml=junit.xml")
        ok.assert_outcomes(passed=1)  # the server refuses requests without its key
        sent = {
            value for *_, headers in proxy.seen for name, value in headers.items() if name.lower() == "authorization"
        }
        assert sent == {f"Bearer {KEY}"} and len(proxy.seen) == 4  # /v1/models and the three rows
        # A server that echoes the key back in its error message.
        proxy.faults.extend([("status", 400, {"Content-Type": "application/json"}, error_body(f"bad token {KEY}"))])
        bad = run(pytester, "--evalkit-no-cache")
        bad.assert_outcomes(failed=1)
        bad.stdout.fnmatch_lines(["*answered 400: bad token ****"])
        outputs = [ok.stdout.str(), ok.stderr.str(), bad.stdout.str(), bad.stderr.str()]
        for path in pytester.path.rglob("*"):
            if path.is_file():
                outputs.append(path.read_bytes().decode("utf-8", "replace"))
        assert not [text[:80] for text in outputs if KEY in text]
        assert len(outputs) > 8  # the run folder, the cache and junit.xml were searched
    finally:
        proxy.close()
        guarded.stop()


@pytest.mark.integration
def test_no_prompt_logprobs_and_an_unserved_adapter_get_clear_messages(proxy, tmp_path):
    from evalkit.backends.base import ChoiceRequest, ModelConfig
    from evalkit.backends.served import ServedBackend
    from evalkit.errors import ModelError

    model = ModelConfig(backend="openai", name=ALIAS, base_url=proxy.url, tokenizer=ALIAS)  # type: ignore[call-arg]
    adapter = ServedBackend.from_config(model, tmp_path).with_adapter("tickets-lora", tmp_path)
    with pytest.raises(ModelError) as unserved:
        adapter.score_choices([ChoiceRequest("Ticket: x\nCategory:", (" billing", " other"))])
    assert unserved.value.message == (
        f"the server at {proxy.url} does not serve the adapter 'tickets-lora'; it serves: {ALIAS}"
    )
    assert "--enable-lora --lora-modules tickets-lora=PATH" in (unserved.value.fix or "")

    no_logprobs = {
        "id": "x",
        "object": "text_completion",
        "created": 0,
        "model": ALIAS,
        "choices": [{"text": " Paris", "index": 0, "logprobs": None, "finish_reason": "length"}],
    }
    proxy.faults.extend(
        [("call", lambda: None), ("status", 200, {"Content-Type": "application/json"}, json.dumps(no_logprobs))]
    )
    backend = ServedBackend.from_config(model, tmp_path)
    with pytest.raises(ModelError) as refused:
        backend.score_choices([ChoiceRequest("Ticket: x\nCategory:", (" billing", " other"))])
    assert "returns no log-probabilities for the prompt's own tokens" in refused.value.message
    assert "`kind: generate` with `scorer: {name: choice" in (refused.value.fix or "")


@pytest.mark.integration
def test_a_server_that_takes_token_ids_gets_them_and_scores_the_same(proxy, tmp_path):
    from evalkit.backends.base import ChoiceRequest, ModelConfig
    from evalkit.backends.served import ServedBackend

    model = ModelConfig(backend="openai", name=ALIAS, base_url=proxy.url, tokenizer=ALIAS)  # type: ignore[call-arg]
    request = ChoiceRequest("Ticket: my parcel never arrived\nCategory:", (" billing", " shipping"))
    as_text = ServedBackend.from_config(model, tmp_path).score_choices([request])[0]
    # The alignment probe (greedy token and echo, without then with BOS), one prompt of token ids asking
    # whether the server takes them (llama.cpp's refuses), then one echo per choice as text.
    assert [type(p).__name__ for p in proxy.prompts] == ["str"] * 4 + ["list"] + ["str"] * 2

    ids_backend = ServedBackend.from_config(model, tmp_path)
    proxy.detokenize = lambda ids: ids_backend.tokenizer.decode(ids)
    proxy.prompts.clear()
    as_ids = ids_backend.score_choices([request])[0]
    scored = proxy.prompts[-2:]  # one echo per choice, after the alignment probe and the ids probe
    assert all(isinstance(p, list) and p[0] == ids_backend.tokenizer.bos_token_id for p in scored), proxy.prompts
    assert as_ids.logprobs == pytest.approx(as_text.logprobs, abs=1e-4)
    assert as_ids.continuation_tokens == as_text.continuation_tokens == (1, 1)


@pytest.mark.integration
def test_a_tokenizer_that_splits_differently_from_the_server_is_caught(proxy, tmp_path, tiny_model):
    from evalkit.backends.base import ChoiceRequest, ModelConfig
    from evalkit.backends.served import ServedBackend
    from evalkit.errors import ModelError

    wrong = ModelConfig(backend="openai", name=ALIAS, base_url=proxy.url, tokenizer=str(tiny_model))  # type: ignore[call-arg]
    backend = ServedBackend.from_config(wrong, tmp_path)
    backend.scorer.prepend_bos = False  # the tiny tokenizer's BOS is not the served model's: skip straight to the count
    backend.scorer.send_ids = False
    with pytest.raises(ModelError) as caught:
        backend.score_choices([ChoiceRequest("Ticket: my parcel never arrived\nCategory:", (" billing", " shipping"))])
    assert caught.value.message.startswith("the server returned ")
    assert caught.value.message.endswith(f"its tokenizer splits the text differently from `tokenizer: {tiny_model}`")


@pytest.mark.integration
def test_latency_is_measured_on_the_requests_sent_and_gates_a_served_run(pytester, proxy):
    import time as _time

    delay = 0.3
    proxy.faults.extend([("call", lambda: _time.sleep(delay))] * 6)  # every request waits 0.3 s more
    suite = served_suite(proxy.url, task=ORDERS_GENERATE, candidates=ORDERS_ZERO_SHOT, rows=6).replace(
        "concurrency: 2", "concurrency: 1"
    )
    pytester.makefile(".eval.yaml", served=suite + 'thresholds: {latency_p95_s: "<= 0.2"}\n')
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency_p95_s*<= 0.2*"])
    entry = json.loads((pytester.path / "reports/latest/results.json").read_text())["suites"]["served"]["zero_shot"]
    latency = entry["latency"]
    assert latency["requests"] == 6 and latency["cache_hits"] == 0 and latency["concurrency"] == 1
    assert latency["cold"] is True
    assert delay <= latency["p50_s"] <= latency["p95_s"] < delay + 2.0
    assert entry["metrics"]["latency_p50_s"] == pytest.approx(latency["p50_s"], abs=1e-4)
    low, high = entry["ci95"]["latency_p95_s"]
    assert low <= entry["metrics"]["latency_p95_s"] <= high
    # one request at a time: about one request per latency
    assert latency["requests_per_s"] == pytest.approx(1 / latency["p50_s"], rel=0.5)

    warm = run(pytester)  # every answer from the result cache: nothing is measured, nothing gates on it
    warm.assert_outcomes(passed=1)
    entry = json.loads((pytester.path / "reports/latest/results.json").read_text())["suites"]["served"]["zero_shot"]
    assert entry["latency"]["requests"] == 0 and entry["latency"]["cache_hits"] == 6
    assert "latency_p95_s" not in entry["metrics"]
