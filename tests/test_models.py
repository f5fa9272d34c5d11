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
    (model_copy / "harness_train.json").write_text('{"totals": {"wall_s": 12.5}}')  # a trained folder's timings
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


def test_local_fingerprint_is_the_runs_fingerprint_or_none_and_fetches_nothing(tmp_path, monkeypatch, model_copy):
    """What a plan hashes (`local_fingerprint`) equals what a run hashes (`fingerprint`) for a folder, a
    materialised alias, a cached hub snapshot and an adapter on one; it is None, with one line saying
    why, where a run would have to install, convert or download; and it writes no memo."""
    import huggingface_hub

    import harness.models as M

    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    import harness.model_aliases as aliases

    for name in ("install_packages", "_assemble_gguf"):  # `materialise` of a materialised alias calls neither
        monkeypatch.setattr(aliases, name, lambda *a, **k: pytest.fail("installed or converted a model"))
    cached = {}

    def snapshot(repo_id, local_files_only=False, **kw):
        if repo_id in cached:
            return str(cached[repo_id])
        if not local_files_only:
            pytest.fail(f"downloaded {repo_id}")
        raise FileNotFoundError(repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    alias = M.SMOKE_MODEL
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": alias}))
    missing = f"{alias} is not materialised on this machine: `harness models pull {alias}` installs it"
    for spec, why in ((alias, missing), (str(adapter), missing),
                      ("org/tiny", "org/tiny is not in the local Hugging Face cache: `hf download org/tiny` fetches it")):
        assert M.local_fingerprint(spec) is None and M.not_local_reason(spec) == why
    shutil.copytree(model_copy, M.alias_dir(alias))
    assert M.local_fingerprint(alias) is None  # no marker: `materialise` would rebuild this folder
    (M.alias_dir(alias) / M.MATERIALISED_MARKER).write_text("{}")
    cached["org/tiny"] = model_copy
    specs = (str(model_copy), alias, "org/tiny", str(adapter))
    local = [M.local_fingerprint(s) for s in specs]
    assert not (cache / "fingerprints.json").exists() and all(M.not_local_reason(s) is None for s in specs)
    assert local == [fingerprint(s) for s in specs] and None not in local


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
