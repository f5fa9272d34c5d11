"""Integration on the real packaged default model (slow: materialises ~0.5 GB and generates).

CI runs these too. They prove the offline path end to end: alias → pip package → safetensors
folder → chat template → batched generation → the paper's scorer → the store → a cache hit.
"""

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


def test_default_model_base_and_teacher_on_five_items(data_dir, tmp_path, monkeypatch):
    import torch

    from harness.cli import app
    from harness.models import DEFAULT_MODEL, is_materialised, materialise
    from harness.store import Store

    torch.set_num_threads(2)
    materialise(DEFAULT_MODEL)
    assert is_materialised(DEFAULT_MODEL)
    db = tmp_path / "h.db"
    args = ["eval", "tooluse", "--model", DEFAULT_MODEL, "--arms", "base,teacher", "--limit", "5",
            "--max-new-tokens", "64", "--db", str(db), "--data-dir", str(data_dir), "--batch-size", "5"]
    runner = CliRunner()
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    store = Store(db)
    evals = store.find_evals(task="tooluse")
    assert {e["arm"] for e in evals} == {"base", "teacher"}
    for e in evals:
        rows = store.examples(e["eval_key"])
        assert len(rows) == 5 and all(r["output"] for r in rows)
        assert e["summary"]["n"] == 5 and 0 <= e["summary"]["accuracy"] <= 1
    # the demonstration in context is visible to the model: the teacher copies the gold action names
    teacher = next(e for e in evals if e["arm"] == "teacher")
    assert teacher["summary"]["action_match"] >= 0.6
    # a cached re-run loads no weights and generates nothing (a timing bound would flake on a shared machine)
    import harness.models as models

    def no_load(*a, **k):
        raise AssertionError("a cached re-run loaded the model")

    monkeypatch.setattr(models, "load_model", no_load)
    r2 = runner.invoke(app, args, catch_exceptions=False)
    assert r2.exit_code == 0, r2.output
    assert len(Store(db).find_evals(task="tooluse")) == 2  # cache hit: nothing new


def test_smoke_model_loads_with_chat_template():
    from harness.generation import render_chat
    from harness.models import SMOKE_MODEL, load_model

    model, tok = load_model(SMOKE_MODEL)
    text = render_chat(tok, "hi")
    assert "hi" in text and text != "hi"
    assert model.config.architectures[0].startswith("Llama")
