"""Small synthetic tool-use records so training tests run in seconds on the tiny model."""

from harness.tasks.tooluse.data import ToolUseRecord


def tiny_records(n: int = 8) -> list[ToolUseRecord]:
    out = []
    for i in range(n):
        calls = [{"Action": "getWeather", "Action_Input": f'{{"city": "C{i}"}}'}]
        prompt = f"Question {i}: weather in C{i}?"
        demo = f"Action: getWeather\nAction Input: C{i}"  # short, so SFT fits tiny completion budgets
        out.append(ToolUseRecord(f"t/{i}", prompt, calls, demo, "t", prompt))
    return out


def tiny_cfg(model_dir, **kw):
    from harness.train.config import TrainConfig

    d = dict(model=str(model_dir), batch_size=4, micro_batch_size=2, max_steps=2, max_completion_tokens=48,
             max_prompt_tokens=512, warmup_steps=1, save_every=1, lora_targets=("q_proj", "v_proj"),
             bf16=False, drift_every=0, lr=1e-2, chunk_tokens=8)
    d.update(kw)
    return TrainConfig(**d)
