"""The shared SFT/SDFT loop on the tiny model: masking, teacher isolation, EMA, checkpoints, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.errors import CheckpointError, ConfigError, DataError
from harness.train.loop import Run, train
from train_helpers import tiny_cfg, tiny_records

torch.set_num_threads(1)


def make_run(tiny_model_dir, tmp_path, records=None, **kw):
    return Run(tiny_cfg(tiny_model_dir, **kw), records or tiny_records(), tmp_path / "out", "datahash")


def test_sft_loss_masks_prompt_tokens(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sft")
    exs = run.examples[:2]
    loss, comp, cmask = run.sft_loss(exs)
    # direct: full forward on [prompt | demo], CE on demo positions only, mean per sequence then batch
    model = run.model
    per_seq = []
    for e in exs:
        ids = torch.tensor([e.student_ids + e.demo_ids], device=run.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        P = len(e.student_ids)
        ce = torch.nn.functional.cross_entropy(logits[P - 1:P - 1 + len(e.demo_ids)],
                                               torch.tensor(e.demo_ids, device=run.device))
        per_seq.append(ce)
    assert loss.item() == pytest.approx(torch.stack(per_seq).mean().item(), rel=1e-4)
    # changing a prompt token's *label* cannot matter: only demo tokens are targets
    assert cmask.sum().item() == sum(len(e.demo_ids) for e in exs)


@pytest.mark.parametrize("teacher", ["ema", "frozen", "live"])
def test_sdft_zero_when_contexts_identical_and_no_grad_to_teacher(tiny_model_dir, tmp_path, teacher):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", teacher=teacher, skip_tokens=0)
    exs = run.examples[:2]
    for e in exs:
        e.teacher_ids = list(e.student_ids)
    # give the student a non-zero adapter so that 'frozen' differs from the student unless contexts match
    comp, cmask = run.rollouts(exs, seeds=[1] * len(exs))
    loss, per_tok, mask = run.divergence_loss(exs, comp, cmask)
    assert abs(loss.item()) < 1e-6
    loss.backward()
    for n, p in run.model.named_parameters():
        if ".teacher." in n or "lora_" not in n:
            assert p.grad is None, n
    assert any(p.grad is not None for n, p in run.model.named_parameters() if ".default." in n)


def test_rollouts_sampled_inside_the_student_forward_give_the_same_loss_and_gradients(tiny_model_dir, tmp_path):
    """share_rollout_prefill: the prompts run once (with gradients) and the rollouts are sampled
    from that cache. The loss and every LoRA gradient equal those of the single forward over
    prompt + completion on the same completions, and the samples equal the separate sampler's."""
    run = make_run(tiny_model_dir, tmp_path, method="sdft", share_rollout_prefill=True)
    assert run.cfg.shares_rollout_prefill()
    with torch.no_grad():  # a non-zero adapter, so the prompt's keys depend on the trained weights
        for n, p in run.model.named_parameters():
            if ".default." in n:
                p.normal_(0, 0.05)
    exs, seeds = run.examples[:2], [7, 8]
    loss, per_tok, mask, comp, cmask = run.sampling_divergence_loss(exs, seeds)
    loss.backward()
    got = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    run.model.zero_grad(set_to_none=True)
    ref_comp, ref_cmask = run.rollouts(exs, seeds)
    assert torch.equal(comp, ref_comp) and torch.equal(cmask, ref_cmask)
    ref_loss, ref_per_tok, _ = run.divergence_loss(exs, ref_comp, ref_cmask)
    ref_loss.backward()
    ref = {n: p.grad.clone() for n, p in run.model.named_parameters() if p.grad is not None}
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(per_tok, ref_per_tok, rtol=1e-4, atol=1e-6)
    assert got.keys() == ref.keys() and any(".lora_A." in n for n in got)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-7), n


def test_shared_rollout_prefill_is_keyed_and_refused_where_it_would_be_wrong(tiny_model_dir, tmp_path):
    from harness.train.config import TrainConfig

    base = dict(method="sdft", gradient_checkpointing=False, lora_dropout=0.0, bf16=False)
    on, off = TrainConfig(**base), TrainConfig(**base, share_rollout_prefill=False)
    assert on.shares_rollout_prefill() and not off.shares_rollout_prefill()
    assert on.key("d", "m") != off.key("d", "m")      # another sampler start: another checkpoint
    # where it cannot apply, the key is the separate sampler's, as before the setting existed
    for kw in (dict(gradient_checkpointing=True), dict(lora_dropout=0.1)):
        a, b = TrainConfig(**base | kw), TrainConfig(**base | kw, share_rollout_prefill=False)
        assert not a.shares_rollout_prefill() and a.key("d", "m") == b.key("d", "m")
    sft = dict(base, method="sft")
    assert TrainConfig(**sft).key("d", "m") == TrainConfig(**sft, share_rollout_prefill=False).key("d", "m")
    # a model with dropout of its own is refused at start-up, in one line naming the setting
    from transformers import AutoConfig

    cfg_dir = tmp_path / "dropout_model"
    import shutil

    shutil.copytree(tiny_model_dir, cfg_dir)
    c = AutoConfig.from_pretrained(cfg_dir)
    c.attention_dropout = 0.1
    c.save_pretrained(cfg_dir)
    with pytest.raises(ConfigError, match="share_rollout_prefill.*dropout"):
        make_run(cfg_dir, tmp_path, method="sdft")
    make_run(cfg_dir, tmp_path / "off", method="sdft", share_rollout_prefill=False)
    # logits scaled after the head: the first token would be drawn from the head's raw output
    c.attention_dropout = 0.0
    c.logit_scale = 0.5
    c.save_pretrained(cfg_dir)
    with pytest.raises(ConfigError, match="share_rollout_prefill.*scales its logits"):
        make_run(cfg_dir, tmp_path / "scaled", method="sdft")


@pytest.mark.parametrize("method, separate_rollout_calls", [("sdft", 0), ("sft", 1)])
def test_a_drift_step_samples_no_second_set_of_rollouts(tiny_model_dir, tmp_path, method, separate_rollout_calls):
    """SDFT's drift probe uses the step's own rollouts (sampled inside the student forward); only
    SFT, which has none, samples some for the probe."""
    run = make_run(tiny_model_dir, tmp_path, method=method, drift_every=1, max_steps=2)
    run.train_step()
    calls = []
    real = run.step_rollouts
    run.step_rollouts = lambda *a, **k: calls.append(1) or real(*a, **k)
    row = run.train_step()
    assert len(calls) == separate_rollout_calls and row["drift_kl"] > 0


def test_ema_arithmetic(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", teacher="ema", ema_alpha=0.25)
    pairs = list(run.teacher._pairs())
    with torch.no_grad():
        for i, (t, s) in enumerate(pairs):
            t.fill_(1.0)
            s.fill_(3.0 + i)
    run.teacher.ema_update(0.25)
    for i, (t, s) in enumerate(pairs):
        assert torch.allclose(t, torch.full_like(t, 0.75 * 1.0 + 0.25 * (3.0 + i)))


def test_lora_ema_teacher_does_not_copy_base_weights(tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir, tmp_path, method="sdft", teacher="ema")
    assert run.teacher.copy is None
    names = [n for n, _ in run.model.named_parameters()]
    assert any(".teacher." in n for n in names)
    n_base = sum(1 for n in names if "lora_" not in n)
    assert n_base == len([n for n, _ in run.model.get_base_model().named_parameters() if "lora_" not in n])


def test_teacher_update_each_step_moves_towards_student(tiny_model_dir, tmp_path):
    cfg = dict(method="sdft", teacher="ema", ema_alpha=0.5, max_steps=1, max_completion_tokens=6)
    run = make_run(tiny_model_dir, tmp_path, **cfg)
    before = {id(t): t.detach().clone() for t, _ in run.teacher._pairs()}
    run.train_step()
    for t, s in run.teacher._pairs():
        assert torch.allclose(t, 0.5 * before[id(t)] + 0.5 * s.detach(), atol=1e-7)


def test_train_exports_loadable_adapter_and_merged_model(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = train(tiny_cfg(tiny_model_dir, method="sft", merge=True), tiny_records(), tmp_path / "o", "h")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, res.final_dir)
    merged = AutoModelForCausalLM.from_pretrained(res.merged_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, merged(ids).logits, atol=1e-4)
    meta = json.loads((res.final_dir / "harness_train.json").read_text())
    assert meta["data_hash"] == "h" and meta["config"]["method"] == "sft" and meta["steps"] == 2
    rows = (res.output_dir / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,divergence,drift_kl") and len(rows) == 3


def test_cached_rerun_and_resume_dir_from_other_config(tiny_model_dir, tmp_path):
    res = train(tiny_cfg(tiny_model_dir, method="sft"), tiny_records(), tmp_path / "o", "h")
    t = time.perf_counter()
    again = train(tiny_cfg(tiny_model_dir, method="sft"), tiny_records(), tmp_path / "o", "h")
    assert again.steps == res.steps and again.resumed_from == 2
    with pytest.raises(CheckpointError, match="differs in: lr"):
        train(tiny_cfg(tiny_model_dir, method="sft", lr=0.5), tiny_records(), tmp_path / "o", "h")


def test_bad_input(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown method"):
        tiny_cfg(tiny_model_dir, method="dpo")
    with pytest.raises(ConfigError, match="unknown divergence"):
        tiny_cfg(tiny_model_dir, divergence="tv")
    with pytest.raises(ConfigError, match="unknown estimator"):
        tiny_cfg(tiny_model_dir, estimator="mc")
    with pytest.raises(ConfigError, match="lora_targets: module 'w_pack'"):
        make_run(tiny_model_dir, tmp_path, lora_targets=("w_pack",))
    recs = tiny_records()
    for r in recs:
        r.demonstration = ""
    with pytest.raises(ConfigError, match="no record has a demonstration"):
        make_run(tiny_model_dir, tmp_path, records=recs, method="sdft")


def test_long_teacher_prompt_is_never_silently_truncated(tiny_model_dir, tmp_path):
    recs = tiny_records()
    recs[0].demonstration = "Action: x\n" * 200
    with pytest.raises(DataError, match="teacher prompt"):
        make_run(tiny_model_dir, tmp_path, records=recs, method="sdft", max_prompt_tokens=300)
    run = make_run(tiny_model_dir, tmp_path, records=recs, method="sdft", max_prompt_tokens=300,
                   truncate_teacher_prompt=True)
    assert max(len(e.teacher_ids) for e in run.examples) == 300


TRAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from train_helpers import tiny_cfg, tiny_records
from harness.train.loop import train
train(tiny_cfg({model!r}, method={method!r}, max_steps=4, max_completion_tokens=24, drift_every=1),
      tiny_records(), {out!r}, "h")
"""


def _script(tmp_path, model_dir, out, method):
    p = tmp_path / f"train_{method}_{Path(out).name}.py"
    p.write_text(TRAIN_SCRIPT.format(tests=str(Path(__file__).parent), model=str(model_dir), out=str(out),
                                     method=method))
    return p


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_sigkill_and_resume_gives_identical_weights(tiny_model_dir, tmp_path, method):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)]))
    ref_out, kill_out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, _script(tmp_path, tiny_model_dir, ref_out, method)], check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, _script(tmp_path, tiny_model_dir, kill_out, method)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(kill_out.glob("ckpt-000002")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-step 3 (or while writing a checkpoint)
    proc.wait()
    assert not (kill_out / "final").exists()
    subprocess.run([sys.executable, _script(tmp_path, tiny_model_dir, kill_out, method)], check=True, env=env,
                   capture_output=True)
    a = load_file(ref_out / "final" / "adapter_model.safetensors")
    b = load_file(kill_out / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (kill_out / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]  # no lost or duplicated steps


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from train_helpers import tiny_cfg, tiny_records
from harness.train.loop import Run
run = Run(tiny_cfg({model!r}, method={method!r}, max_steps=1, max_completion_tokens=24, micro_batch_size=2,
                   batch_size=4), tiny_records(), {out!r}, "h")
run.train_step()
if run.acc.is_main_process:
    from safetensors.torch import save_file
    from harness.train.checkpoint import trainable_state
    save_file(trainable_state(run), {out!r} + ".safetensors")
"""


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_two_processes_give_the_same_update_as_one(tiny_model_dir, tmp_path, method):
    """accelerate launch --cpu --num_processes 2 == one process with the same effective batch."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parent.parent)]))
    outs = {}
    for n in (1, 2):
        out = str(tmp_path / f"p{n}")
        script = tmp_path / f"ddp{n}.py"
        script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), model=str(tiny_model_dir), out=out,
                                            method=method))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[n] = load_file(out + ".safetensors")
    for k in outs[1]:
        # tolerance: float32 summation order differs between one process and an all-reduce
        assert torch.allclose(outs[1][k], outs[2][k], atol=1e-6, rtol=1e-5), k
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in outs[1].values())


@pytest.mark.parametrize("method", ["sft", "sdft"])
def test_drift_is_zero_before_the_first_update_without_a_probe_and_measured_after(tiny_model_dir, tmp_path, method):
    run = make_run(tiny_model_dir, tmp_path, records=tiny_records(), method=method, drift_every=1, max_steps=2)
    first, second = run.train_step(), run.train_step()
    assert first["drift_kl"] == 0.0 and first["drift_s"] == 0.0      # exact by construction, no probe paid
    assert second["drift_s"] > 0 and second["drift_kl"] > 0          # after one update (lr 1e-2) it moved


def test_flops_estimate_counts_student_teacher_and_rollout_tokens_separately():
    from harness.train.accounting import flops_estimate

    n = 1000
    # SFT, LoRA, no recompute: 4N per trained token only
    assert flops_estimate(n, 100, 0, 0, 0, lora=True, recompute=False) == 4 * n * 100
    # full fine-tuning adds weight gradients, checkpointing adds a recomputed forward
    assert flops_estimate(n, 100, 0, 0, 0, lora=False, recompute=True) == 8 * n * 100
    # SDFT: a long teacher prompt costs its own tokens, not the student's
    short = flops_estimate(n, 100, 120, 80, 20, lora=True, recompute=False)
    long = flops_estimate(n, 100, 920, 80, 20, lora=True, recompute=False)
    assert long - short == 2 * n * 800


def test_a_second_run_on_a_locked_output_folder_stops_in_one_line(tiny_model_dir, tmp_path):
    import fcntl

    from harness.train.checkpoint import LOCK_NAME

    out = tmp_path / "o"
    out.mkdir()
    with open(out / LOCK_NAME, "a+") as held:  # another process writing this folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CheckpointError, match="another harness process is writing this folder"):
            train(tiny_cfg(tiny_model_dir, method="sft"), tiny_records(), out, "h")
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # nothing written
    res = train(tiny_cfg(tiny_model_dir, method="sft"), tiny_records(), out, "h")  # released: runs
    assert res.steps == 2


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, tmp_path, caplog):
    cfg = dict(method="sft", save_every=1, keep_checkpoints=2, max_steps=2)
    out = tmp_path / "o"
    Run(tiny_cfg(tiny_model_dir, **cfg), tiny_records(), out, "h").run()
    cks = sorted(out.glob("ckpt-*"))
    assert [c.name for c in cks] == ["ckpt-000001", "ckpt-000002"]
    (cks[-1] / "trainable.safetensors").write_bytes(b"\x00" * 10)  # a crash mid-write, a full disk
    with caplog.at_level("WARNING", logger="harness.train"):
        assert Run(tiny_cfg(tiny_model_dir, **cfg), tiny_records(), out, "h").resume() == 1
    assert "ckpt-000002" in caplog.text and "resuming from ckpt-000001" in caplog.text
    # every checkpoint damaged: one line, and the files are left exactly as they were
    (cks[0] / "state.json").write_text("{")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from"):
        Run(tiny_cfg(tiny_model_dir, **cfg), tiny_records(), out, "h").resume()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_side_effects_are_callbacks_the_caller_can_replace(tiny_model_dir, tmp_path):
    """The loop calls each callback after every step and once at the end; replacing the default
    set removes its side effects (no checkpoint, CSV or exported model), and the default set
    writes the store rows, progress, CSV and checkpoints a run resumes from."""
    from harness.store import Store
    from harness.train.callbacks import TrainCallback

    class Record(TrainCallback):
        def __init__(self):
            self.calls = []

        def on_step_end(self, run, row):
            self.calls.append(("step", run.step, row["step"]))

        def on_train_end(self, run):
            self.calls.append(("end", run.step, None))

    rec = Record()
    out = tmp_path / "quiet"
    res = Run(tiny_cfg(tiny_model_dir, method="sft", max_steps=3), tiny_records(), out, "h", callbacks=[rec]).run()
    assert rec.calls == [("step", 1, 1), ("step", 2, 2), ("step", 3, 3), ("end", 3, None)]
    assert res.steps == 3 and len(res.log) == 3
    assert sorted(p.name for p in out.iterdir() if p.name != ".harness-train.lock") == ["run_config.json"]

    store = Store(tmp_path / "s.db")
    seen = []
    out2 = tmp_path / "default"
    train(tiny_cfg(tiny_model_dir, method="sft", max_steps=3, save_every=2, keep_checkpoints=2),
          tiny_records(), out2, "h",
          store=store, progress=lambda s, n, row: seen.append((s, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in out2.glob("ckpt-*")) == ["ckpt-000002", "ckpt-000003"]
    assert (out2 / "final" / "harness_train.json").is_file()
    assert len((out2 / "train_log.csv").read_text().strip().splitlines()) == 1 + 3
    rows = store.conn.execute("select step from train_steps order by step").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
