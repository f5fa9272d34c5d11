"""Model specs and fingerprints: what a name resolves to, and what the cache key of a model hashes."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.errors import ModelError
from harness.models import check_device, clear_quantizer_flags, fingerprint, load_model, resolve


@pytest.fixture()
def model_copy(tmp_path, tiny_model_dir):
    return shutil.copytree(tiny_model_dir, tmp_path / "m")


def test_resolve_alias_folder_adapter_hub_and_errors(tmp_path, model_copy):
    assert resolve("smollm2-135m-instruct", materialise_alias=False).kind == "alias"
    assert resolve(str(model_copy)).kind == "folder"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model_copy)}))
    spec = resolve(str(adapter))
    assert spec.adapter == str(adapter) and spec.path == str(model_copy)
    assert resolve("org/name").kind == "hub"
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="field 'base_model_name_or_path' missing"):
        resolve(str(adapter))
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelError, match="unknown model 'not-a-model'"):
        resolve("not-a-model")


def test_fingerprint_follows_weights_and_chat_template_not_unrelated_files(model_copy):
    before = fingerprint(str(model_copy))
    (model_copy / "README.md").write_text("notes")
    assert fingerprint(str(model_copy)) == before
    (model_copy / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert fingerprint(str(model_copy)) != before


def test_hub_ids_hash_their_snapshot_files_and_fail_cleanly_without_one(monkeypatch, model_copy):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(model_copy))
    first = fingerprint("org/tiny")
    assert first == fingerprint(str(model_copy))
    (model_copy / "config.json").write_text((model_copy / "config.json").read_text() + " ")
    assert fingerprint("org/tiny") != first  # a new upstream revision is a new model

    def offline(repo_id, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelError, match=r"org/tiny: not a local folder, and the hub snapshot is unavailable "
                                         r"\(OSError: We couldn't connect"):
        fingerprint("org/tiny")


def test_a_hub_id_loads_from_the_snapshot_it_was_fingerprinted_by(monkeypatch, model_copy):
    """Weights and tokenizer come from the very folder `fingerprint` hashed: handing the bare id to
    `from_pretrained` could fetch a newer upstream revision than the one the cache key names."""
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: asked.append((repo_id, kw.get("local_files_only"))) or str(model_copy))
    model, tok = load_model("org/tiny")
    assert model.name_or_path == str(model_copy) and tok.name_or_path == str(model_copy)
    assert asked and all(a == ("org/tiny", True) for a in asked)  # the cached snapshot, no hub request


def test_check_device_names_the_problem_in_one_line():
    import torch

    assert check_device("cpu") == "cpu"
    with pytest.raises(ModelError, match=r"device 'gpu0': not a torch device"):
        check_device("gpu0")
    if torch.cuda.is_available():
        assert check_device("cuda") == "cuda"
        with pytest.raises(ModelError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ModelError, match=r"device 'cuda:1': CUDA is not available"):
            check_device("cuda:1")


def test_clear_quantizer_flags_makes_a_gguf_loaded_model_saveable(tiny_model, tmp_path):
    model, _ = tiny_model
    model.hf_quantizer = object()
    model.is_quantized = True
    model.config.quantization_config = {"quant_method": "gguf"}
    clear_quantizer_flags(model)
    assert model.hf_quantizer is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
