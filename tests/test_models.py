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


def test_pickle_only_folders_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError) as err:
        resolve_model(str(tmp_path))
    assert "has no *.safetensors weights (it has pickle checkpoints: pytorch_model.bin)" in str(err.value)
    assert "pickle checkpoints can run code when loaded and are refused" in str(err.value)


def test_unknown_name_and_offline_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="'smolm2' is neither a known alias nor an existing folder"):
        resolve_model("smolm2")
    with pytest.raises(ModelError, match=r"model 'acme/nothing' is not available on this machine \(evaluation never downloads\)"):
        resolve_model("acme/nothing")


def test_cli_reports_errors_without_a_traceback(capsys):
    assert main(["prepare", "./no/such/folder"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evalkit: model './no/such/folder' is neither a known alias nor an existing folder")
