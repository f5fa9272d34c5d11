"""Cross-check: the harness's SDFT loss equals TRL's `trl.experimental.sdft` on the same batch.

TRL is configured to mirror the paper: full logits, forward KL (distillation_alpha=0), the paper's
teacher template, EMA teacher, one generation, 3 skipped tokens. At step 0 both EMA teachers equal
the initial weights, so the losses must agree. Tolerance: 1e-5 absolute in float32 (different
but equivalent reductions; observed differences are ~1e-7).
"""

import pytest
import torch

from harness.tasks.base import TEACHER_TEMPLATES
from harness.train.loop import Run
from train_helpers import tiny_cfg, tiny_records

torch.set_num_threads(1)


@pytest.mark.parametrize("divergence,alpha", [("forward", 0.0), ("reverse", 1.0), ("jsd", 0.5)])
def test_sdft_loss_matches_trl(tiny_model_dir, tmp_path, divergence, alpha):
    from datasets import Dataset
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer
    from trl.trainer.utils import pad

    recs = tiny_records(4)
    run = Run(tiny_cfg(tiny_model_dir, method="sdft", lora=False, teacher="ema", skip_tokens=3,
                       divergence=divergence, jsd_beta=0.5, max_completion_tokens=12),
              recs, tmp_path / "ours", "h")
    exs = run.examples[:2]
    comp, cmask = run.rollouts(exs, seeds=[3] * len(exs))
    ours, _, _ = run.divergence_loss(exs, comp, cmask)

    template = TEACHER_TEMPLATES["paper"].replace("{demonstration}", "{privileged_context}")
    args = SDFTConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, num_generations=1,
                      use_cpu=True, report_to="none", distillation_mode="full_logits", distillation_alpha=alpha,
                      teacher_model_kind="ema", teacher_update_rate=0.01, teacher_sync_steps=1,
                      num_loss_tokens_to_skip=3, max_completion_length=12, max_prompt_length=None,
                      teacher_prompt_template=template, bf16=False, temperature=1.0,
                      gradient_checkpointing=False)
    prompts = [[{"role": "user", "content": r.prompt}] for r in recs[:2]]
    priv = [r.demonstration for r in recs[:2]]
    ds = Dataset.from_dict({"prompt": prompts, "privileged_context": priv})
    tr = SDFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=ds, processing_class=run.tok)
    P = [torch.tensor(x) for x in tr._tokenize_prompts(prompts)]
    assert [p.tolist() for p in P] == [e.student_ids for e in exs]  # same chat rendering
    pad_id = run.tok.pad_token_id
    inputs = dict(prompt_ids=pad(P, pad_id, padding_side="left"),
                  prompt_mask=pad([torch.ones_like(p) for p in P], 0, padding_side="left"),
                  completion_ids=comp, completion_mask=cmask)
    inputs.update(tr.teacher_context_builder.build(prompts, priv, comp, cmask))
    tr.model.eval()
    theirs = tr.compute_loss(tr.model, inputs)
    assert abs(ours.item() - theirs.item()) < 1e-5, (ours.item(), theirs.item())
    assert ours.item() != 0.0
