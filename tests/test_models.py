import pytest

from evalkit.cli import main
from evalkit.errors import ModelError
from evalkit.models import folder_fingerprint, resolve_model


def test_local_folder_resolves_with_a_content_fingerprint(tiny_model, tmp_path):
    resolved = resolve_model(str(tiny_model))
    assert resolved.path == tiny_model and resolved.source == "local"
    assert resolved.fingerprint == folder_fingerprint(tiny_model)
    # Relative to the suite's folder.
    assert resolve_model(tiny_model.name, base_dir=tiny_model.parent).path == tiny_model


def test_fingerprint_changes_with_the_weights(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_model)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(copy) != folder_fingerprint(tiny_model)


def _pickled_copy(tiny_model, folder):
    """The tiny model with its weights as a pickle checkpoint (pytorch_model.bin) instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_model, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_pickle_weights_load_only_when_the_suite_opts_in(tiny_model, tmp_path, suite_dir):
    from evalkit.session import EvalSession

    pickled = _pickled_copy(tiny_model, tmp_path / "pickled")
    with pytest.raises(ModelError) as err:
        resolve_model(str(pickled))
    assert "has only pickle weights (pytorch_model.bin), which can run code when loaded and are refused" in str(
        err.value
    )
    assert "set `model: {name: ..., allow_pickle: true}` in the suite" in str(err.value)
    assert resolve_model(str(pickled), allow_pickle=True).path == pickled

    suite = (
        "suite: s\nmodel: {name: MODEL, allow_pickle: ALLOW}\ndataset: {path: data/tickets.jsonl}\n"
        "task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}\n"
        'candidates:\n  plain: {template: "Ticket: {{ text }}\\nCategory:"}\n'
    )
    session = EvalSession(root=suite_dir.root, reports_dir=suite_dir.root / "reports")
    refused = suite_dir(suite.replace("MODEL", str(pickled)).replace("ALLOW", "false"), name="refused.eval.yaml")
    with pytest.raises(ModelError, match=r"refused.eval.yaml:2: model folder .* has only pickle weights"):
        session.run(session.spec(refused), "plain")
    allowed = session.run(
        session.spec(
            suite_dir(suite.replace("MODEL", str(pickled)).replace("ALLOW", "true"), name="allowed.eval.yaml")
        ),
        "plain",
    )
    safe = session.run(
        session.spec(
            suite_dir(
                suite.replace("MODEL", str(tiny_model)).replace("ALLOW", "false").replace("suite: s", "suite: t"),
                name="safe.eval.yaml",
            )
        ),
        "plain",
    )
    assert [e.output for e in allowed.examples] == [e.output for e in safe.examples]
    assert [e.score for e in allowed.examples] == pytest.approx([e.score for e in safe.examples], abs=1e-5)


def test_unknown_name_and_offline_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="'smolm2' is neither a known alias nor an existing folder"):
        resolve_model("smolm2")
    with pytest.raises(
        ModelError, match=r"model 'acme/nothing' is not available on this machine \(evaluation never downloads\)"
    ):
        resolve_model("acme/nothing")


def test_cli_reports_errors_without_a_traceback(capsys):
    assert main(["prepare", "./no/such/folder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evalkit: model './no/such/folder' is neither a known alias nor an existing folder")


def test_a_models_own_code_never_runs_unless_the_suite_trusts_it(tiny_model, tmp_path):
    """A model folder that asks for its own modelling code (config.json `auto_map`) loads with transformers'
    own class for its architecture, and its code is never imported; with trust_remote_code its code loads."""
    import json
    import shutil

    from evalkit.backends.hf import HFBackend

    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM\n\n\nclass CustomModel(LlamaForCausalLM):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    fingerprint = folder_fingerprint(folder)

    assert type(HFBackend(folder, fingerprint=fingerprint).model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()
    backend = HFBackend(folder, fingerprint=fingerprint, trust_remote_code=True)
    assert marker.read_text() == "ran" and type(backend.model).__name__ == "CustomModel"
