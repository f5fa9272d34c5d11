"""Rollouts are samples from the policy, teacher and drift forwards are deterministic, left padding
does not change a row, and every phase of a step is timed (issue 12 items 10-11, issue 17 item 6)."""

import json
import time

import pytest
import torch

from harness.train.accounting import PHASES, Phases
from harness.train.loop import Run, train
from train_helpers import tiny_cfg, tiny_records

torch.set_num_threads(1)


def make_run(model_dir, tmp_path, **kw):
    return Run(tiny_cfg(model_dir, **kw), tiny_records(), tmp_path / "out", "datahash")


def pollute_generation_config(run):
    """What a hub model may ship: every one of these would reshape the sampling distribution."""
    gc = run.model.get_base_model().generation_config
    gc.repetition_penalty = 3.0
    gc.no_repeat_ngram_size = 1
    gc.top_k = 2
    gc.min_p = 0.5
    gc.suppress_tokens = list(range(10, 200))
    gc.min_new_tokens = 5


def manual_samples(run, exs, seeds):
    """Reference sampler: each row on its own (no batch, no cache), full forward each step,
    last-position logits, only the configured temperature/top-k/top-p warpers, one multinomial draw
    per step from the row's own generator seeded with its seed (a row ends at its first EOS, which it
    keeps); right-padded with a length mask."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from harness.train.batches import right_pad

    cfg, pad = run.cfg, run.tok.pad_token_id
    warpers = []
    if cfg.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(cfg.temperature))
    if cfg.top_k:
        warpers.append(TopKLogitsWarper(cfg.top_k))
    if cfg.top_p < 1.0:
        warpers.append(TopPLogitsWarper(cfg.top_p))
    out = [[] for _ in exs]
    model = run.model.eval()
    with torch.no_grad():
        for r, (ex, seed) in enumerate(zip(exs, seeds)):
            g = torch.Generator().manual_seed(seed)
            for _ in range(cfg.max_rollout_tokens or cfg.max_completion_tokens):
                ids = torch.tensor([ex.student_ids + out[r]])
                logits = model(input_ids=ids).logits[:, -1].float()
                for w in warpers:
                    logits = w(ids, logits)
                t = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)[0, 0])
                out[r].append(t)
                if t in run.eos_ids:
                    break
    model.train()
    return right_pad(out, pad)


@pytest.mark.parametrize("sampling", [dict(temperature=0.7), dict(temperature=1.0, top_k=5, top_p=0.9)])
def test_rollouts_are_policy_samples_whatever_the_generation_config(tiny_model_dir, tmp_path, sampling):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", max_completion_tokens=12, **sampling)
    exs = run.examples[:3]
    pollute_generation_config(run)
    run.eos_ids = run.eos_ids | set(range(300, 420))  # rows end at different steps: pruning is exercised
    comp, cmask = run.rollouts(exs, seeds=[7, 8, 9])
    ref, ref_mask = manual_samples(run, exs, seeds=[7, 8, 9])
    assert torch.equal(comp, ref) and torch.equal(cmask, ref_mask)
    assert 0 < cmask.sum() < cmask.numel()  # some row ended early: the pruned path was exercised
    # the model's own config is left as it was (the swap is undone)
    assert run.model.get_base_model().generation_config.repetition_penalty == 3.0



def test_a_steps_rollouts_do_not_depend_on_how_it_is_split_into_micro_batches(tiny_model_dir, tmp_path):
    """Each row draws from its own stream seeded by (seed, step, row): sampling the step's four
    rows in one batch gives what one micro-batch at a time, or one row at a time, would give."""
    got = {}
    for mb in (1, 2, 4):
        run = make_run(tiny_model_dir, tmp_path / str(mb), method="sdft", max_completion_tokens=10, batch_size=4,
                       micro_batch_size=mb, temperature=1.0)
        run.eos_ids = run.eos_ids | set(range(300, 420))  # rows end at different steps
        micro = run.my_micro_batches(1)
        seeds = run.row_seeds(1, micro)
        rows = []
        for c, m, lp in run.step_rollouts(micro, seeds):
            assert lp is None  # the trainer's own sampler reports no log-probs
            assert m.sum(1).max() == m.shape[1]  # each micro-batch trimmed to its own longest row
            rows += [c[i, :int(m[i].sum())].tolist() for i in range(len(c))]
        got[mb] = (rows, [s for r in seeds for s in r])
    assert got[1] == got[2] == got[4]
    assert len(set(map(tuple, got[1][0]))) > 1 and len(set(got[1][1])) == 4   # distinct rows, distinct seeds

def test_rollouts_sample_with_only_the_configured_warpers(tiny_model_dir, tmp_path, monkeypatch):
    """The rollout path is `sample_pruned` with the configured settings, and never `generate`,
    whose processor list would be filled from the model's generation_config."""
    import harness.decoding as gen
    from transformers.generation.utils import GenerationMixin

    run = make_run(tiny_model_dir, tmp_path, method="sdft", max_completion_tokens=4, temperature=0.7, top_k=5,
                   top_p=0.9)
    pollute_generation_config(run)
    calls = []
    real = gen.sample_pruned

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(gen, "sample_pruned", spy)
    monkeypatch.setattr(GenerationMixin, "_get_logits_processor",
                        lambda *a, **kw: pytest.fail("rollouts went through generate's processor list"))
    run.rollouts(run.examples[:2], seeds=[1] * len(run.examples[:2]))
    assert len(calls) == 1 and len(calls[0].pop("row_generators")) == 2   # one random stream per row
    assert calls[0].pop("prefilled") is None
    assert calls == [dict(temperature=0.7, top_p=0.9, top_k=5)]
    # a training step samples from the student's own prompt forward, with the same settings
    calls.clear()
    run.train_step()
    assert calls and all(kw.pop("prefilled") is not None and len(kw.pop("row_generators")) == 2 for kw in calls)
    assert calls == [dict(temperature=0.7, top_p=0.9, top_k=5)] * len(calls)


def test_top_k_is_off_by_default_and_validated(tiny_model_dir):
    from harness.errors import ConfigError

    assert tiny_cfg(tiny_model_dir).top_k is None
    with pytest.raises(ConfigError, match="train.top_k"):
        tiny_cfg(tiny_model_dir, top_k=0)
    with pytest.raises(ConfigError, match="train.temperature"):
        tiny_cfg(tiny_model_dir, temperature=0.0)
    # unset top_k and the default task leave the training key as it was before those settings existed
    from harness.hashing import hash_obj

    from harness.train.config import ROLLOUT_SAMPLER, ROLLOUT_SAMPLER_SHARED_PREFILL

    left_out = ("save_every", "keep_checkpoints", "merge", "drift_every", "top_k", "task", "rollout_backend",
                "vllm_is_cap", "share_rollout_prefill")
    cfg = tiny_cfg(tiny_model_dir, method="sft")
    d = {k: v for k, v in cfg.to_dict().items() if k not in left_out}
    assert cfg.key("d", "m") == hash_obj({"config": d, "data": "d", "model": "m"}, n=20)
    # SDFT weights depend on the rollout sampler: its id is in the key, so a checkpoint trained on
    # another sampler's rollouts is never reused or resumed as if current
    for share, sampler in ((False, ROLLOUT_SAMPLER), (True, ROLLOUT_SAMPLER_SHARED_PREFILL)):
        sd = tiny_cfg(tiny_model_dir, method="sdft", share_rollout_prefill=share)
        d = {k: v for k, v in sd.to_dict().items() if k not in left_out}
        assert sd.key("d", "m") == hash_obj({"config": d | {"rollout_sampler": sampler}, "data": "d",
                                             "model": "m"}, n=20)
    assert sd.key("d", "m") != tiny_cfg(tiny_model_dir, method="sdft", top_k=5).key("d", "m")


def _absolute_position_model(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("path", ["student", "module"])
def test_left_padded_row_gives_the_same_logits_as_unpadded(tiny_model_dir, tmp_path, arch, path):
    """Llama (RoPE) would agree up to rounding even without position ids; GPT-2 (absolute position
    embeddings) only agrees when positions are counted from the attention mask."""
    if arch == "llama":
        run = make_run(tiny_model_dir, tmp_path, method="sft")
    else:
        from harness.models import load_tokenizer

        tok = load_tokenizer(str(tiny_model_dir))
        run = Run(tiny_cfg(tiny_model_dir, method="sft", lora=False), tiny_records(), tmp_path / "out", "h",
                  model=_absolute_position_model(tok), tokenizer=tok)
    short, long = run.examples[0], run.examples[1]
    long.student_ids = long.student_ids + long.student_ids[:7]  # force left padding of `short`
    comp = torch.tensor([short.demo_ids, long.demo_ids[:len(short.demo_ids)]])
    cmask = torch.ones_like(comp)
    module = None if path == "student" else run.model
    run.model.eval()  # compare the forward itself, not dropout
    with torch.no_grad():
        both = run._hidden([short.student_ids, long.student_ids], comp, cmask, module=module)
        alone = run._hidden([short.student_ids], comp[:1], cmask[:1], module=module)
        head = run.model.get_output_embeddings()
        got, want = head(both[0]), head(alone[0])
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_teacher_and_drift_forwards_run_in_eval_mode_and_restore_train(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", teacher="ema", lora_dropout=0.5, skip_tokens=0,
                   max_completion_tokens=6)
    seen = []
    decoder = run.model.get_decoder()
    hook = decoder.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    exs = run.examples[:2]
    comp, cmask = run.rollouts(exs, seeds=[3] * len(exs))
    run.model.train()
    seen.clear()
    run.divergence_loss(exs, comp, cmask)
    assert seen == [False, True]        # teacher forward, then the student's (with gradients, dropout on)
    assert run.model.training
    with torch.no_grad():               # move the student off the initial model, so the KL is not 0
        for n, p in run.model.named_parameters():
            if "lora_B.default" in n:
                p.normal_(0, 0.5)
    seen.clear()
    a, b = run.drift_kl(exs, comp, cmask), run.drift_kl(exs, comp, cmask)
    hook.remove()
    assert seen == [False] * 4 and run.model.training
    assert a == b and a > 0             # dropout 0.5 in train mode would make the two probes differ


def test_phases_are_exclusive():
    ph = Phases(torch.device("cpu"))
    with ph("student_fwd_s"):
        time.sleep(0.02)
        with ph("teacher_s"):
            time.sleep(0.06)
        time.sleep(0.02)
    assert ph.t["teacher_s"] >= 0.06
    assert 0.04 <= ph.t["student_fwd_s"] < 0.09   # counted twice, it would be >= 0.10


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_every_phase_of_a_step_is_timed_and_stored(tiny_model_dir, tmp_path, method):
    from harness.store import Store

    store = Store(tmp_path / "h.db")
    cfg = tiny_cfg(tiny_model_dir, method=method, drift_every=1, max_completion_tokens=24, max_rollout_tokens=6)
    res = train(cfg, tiny_records(), tmp_path / "o", "h", store=store)
    row = store.train_steps(res.train_key)[1]  # step 2: the first with a drift probe
    on = {"student_fwd_s", "student_bwd_s", "optim_s", "drift_s"} | ({"gen_s", "teacher_s"} if method == "sdft"
                                                                      else set())
    for k in PHASES:
        assert (row[k] > 0) == (k in on), (k, row[k])
    # phases are exclusive, so with the unattributed rest they add up to the step (+ drift, off the clock)
    total = sum(row[k] for k in PHASES) + row["other_s"]
    assert total == pytest.approx(row["step_s"] + row["drift_s"], rel=1e-6)
    header = (res.output_dir / "train_log.csv").read_text().splitlines()[0].split(",")
    assert set(PHASES) <= set(header)


@pytest.mark.parametrize("method,expect", [("sdft", "lora_factors"), ("sft", None)])
def test_training_metadata_says_what_the_ema_averages(tiny_model_dir, tmp_path, method, expect):
    cfg = tiny_cfg(tiny_model_dir, method=method, max_steps=1, max_completion_tokens=24,
                   max_rollout_tokens=4)
    res = train(cfg, tiny_records(), tmp_path / "o", "h")
    meta = json.loads((res.final_dir / "harness_train.json").read_text())
    assert meta["ema_over"] == expect
    assert json.loads((res.output_dir / "run_config.json").read_text())["ema_over"] == expect


def test_full_fine_tuning_ema_averages_weights(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", lora=False)
    assert run.teacher.ema_over == "weights"
    assert make_run(tiny_model_dir, tmp_path, method="sdft", teacher="frozen").teacher.ema_over is None


def test_sft_chunked_loss_and_gradients_equal_a_full_logits_computation(tiny_model_dir, tmp_path):
    """The SFT step's chunked head (recomputed in backward) changes cost, not the loss or its gradient."""
    run = make_run(tiny_model_dir, tmp_path, method="sft", chunk_tokens=3, max_completion_tokens=24)
    exs = run.examples[:2]
    exs[1].demo_ids = exs[1].demo_ids[:-4]  # unequal lengths: right padding must stay out of the loss
    run.model.train()
    loss, _, _ = run.sft_loss(exs)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    run.model.zero_grad(set_to_none=True)
    per_seq = []
    for e in exs:  # one unpadded row at a time, full logits, mean CE over the demonstration
        ids = torch.tensor([e.student_ids + e.demo_ids])
        logits = run.model(input_ids=ids).logits[0].float()
        P = len(e.student_ids)
        per_seq.append(torch.nn.functional.cross_entropy(logits[P - 1:P - 1 + len(e.demo_ids)],
                                                         torch.tensor(e.demo_ids)))
    ref = torch.stack(per_seq).mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert ours.keys() == {n for n, p in run.model.named_parameters() if p.grad is not None} and ours
    for n, p in run.model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(ours[n], p.grad, atol=1e-6, rtol=1e-4), n


def test_profile_step_script_prints_every_phase_for_both_methods(tiny_model_dir, data_dir, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
    spec = importlib.util.spec_from_file_location("profile_step", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rows.json"
    assert mod.main(["--model", str(tiny_model_dir), "--steps", "2", "--batch", "1", "--micro", "1",
                     "--prompt-tokens", "16384", "--completion-tokens", "4096", "--rollout-tokens", "3",
                     "--bf16", "false", "--no-gradient-checkpointing", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sft step 2" in text and "sdft step 2" in text
    for _, label in mod.ROWS:
        assert label in text
    rows = json.loads(out.read_text())
    assert rows["sdft"][1]["drift_s"] > 0 and rows["sdft"][1]["gen_s"] > 0 and rows["sft"][1]["gen_s"] == 0


@pytest.mark.parametrize("lora", [True, False])
def test_bf16_rollouts_through_the_head_copy_equal_autocasts_own_cast(tiny_model_dir, tmp_path, lora, monkeypatch):
    """Under bf16 autocast, sampling through the cached bf16 head gives the tokens autocast's per-call
    cast of the fp32 head gives, and the head is restored afterwards (still the fp32 parameter)."""
    from contextlib import nullcontext

    from harness.train.loop import Run

    run = make_run(tiny_model_dir, tmp_path, method="sdft", max_completion_tokens=12, bf16=True, lora=lora)
    run.eos_ids = run.eos_ids | set(range(300, 420))
    exs = run.examples[:3]
    head = run.model.get_output_embeddings()
    calls = []
    real = torch.nn.functional.linear

    def spy(x, w, b=None):
        calls.append((w.dtype, tuple(w.shape)))
        return real(x, w, b)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    fast = run.rollouts(exs, seeds=[4, 5, 6])
    assert (torch.bfloat16, tuple(head.weight.shape)) in calls   # the head's bf16 copy was used
    assert "forward" not in vars(head) and head.weight.dtype == torch.float32
    monkeypatch.setattr(Run, "_bf16_head", lambda self, model: nullcontext())
    slow = run.rollouts(exs, seeds=[4, 5, 6])
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
