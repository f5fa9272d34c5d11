"""`harness train` options derived from the TrainConfig fields (harness.cli_options): every field
has a flag and help text, flags override --config, bad values are one line naming the key, and the
training key is what it was when the fields were written out by hand."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from harness.cli_options import cli_type, flag_names, help_text
from harness.train.config import TrainConfig

EXEMPT = {"method", "model", "task"}  # hand-written `harness train` options with their own defaults


# Pinned training keys: a change here orphans every cached checkpoint, so it must be deliberate
# (and in the CHANGELOG). The SDFT keys include the rollout sampler: by default sample_pruned/3
# (share_rollout_prefill, 2026-12-04); with it off, sample_pruned/2 and the keys from before it.
# The SFT one does not. bf16 is explicit because `auto` resolves per machine.
KEY_BF16_OFF = "29a77a3c83bdd0958491"
KEY_BF16_ON = "92494ba33175ed3e9093"
KEY_BF16_OFF_SEPARATE_PREFILL = "444a762d44aed989283b"
KEY_BF16_ON_SEPARATE_PREFILL = "eee8881bbd0a94b90816"
KEY_SCIENCE = "70ac1a6e6ce5402fbdd2"


def test_the_training_key_is_unchanged():
    assert TrainConfig(bf16=False).key("d", "m") == KEY_BF16_OFF
    cfg = TrainConfig()
    assert cfg.key("d", "m") == (KEY_BF16_ON if cfg.bf16 else KEY_BF16_OFF)
    sep = TrainConfig(share_rollout_prefill=False)
    assert sep.key("d", "m") == (KEY_BF16_ON_SEPARATE_PREFILL if sep.bf16 else KEY_BF16_OFF_SEPARATE_PREFILL)
    sci = TrainConfig(method="sft", bf16=False, task="science", top_k=5, max_steps=3, lora_targets=["q_proj"])
    assert sci.key("d", "m") == KEY_SCIENCE


# (key, hash of to_dict()) computed with the hand-written type checks (commit dfdb8f6), before the
# settings were validated through harness.config_schema: values are checked, never converted (an
# integer `lr: 1` stays 1), so neither the training key nor the recorded settings move.
PINNED = [
    (dict(method="sdft", bf16=False, divergence="jsd", jsd_beta=0.3, teacher="frozen", top_k=20, temperature=0.7,
          lr=1), "d6e824a45ee534ea222f", "b6739becd3d435615228"),
    (dict(method="sft", bf16=True, lora=False, max_steps=12, lora_targets=("q_proj", "v_proj"), max_rollout_tokens=64,
          epochs=2, save_every=3, merge=True), "f1df1b919bd9e0ff116f", "686e73b2908ec82e2fff"),
    (dict(method="sdft", bf16=False, task="science", lr=2e-5, estimator="topk", topk=50, lora_targets=["q_proj"],
          max_grad_norm=2), "87557c73622b8eda504b", "0195c38f66d8da5dc145"),
]


# Settings added after the pins, at their defaults in the pinned configs (the key leaves them out)
# or, where the default moved the SDFT key, at the value that keeps it (share_rollout_prefill).
ADDED_SINCE_PINS = {"rollout_backend": "hf", "vllm_is_cap": None, "share_rollout_prefill": False}


@pytest.mark.parametrize("settings, key, dict_hash", PINNED)
def test_keys_and_settings_match_the_hand_checked_config(settings, key, dict_hash):
    from harness.hashing import hash_obj

    settings = settings | {"share_rollout_prefill": False}
    for cfg in (TrainConfig(**settings), TrainConfig.from_dict(settings)):
        d = cfg.to_dict()
        assert {k: d.pop(k) for k in ADDED_SINCE_PINS} == ADDED_SINCE_PINS
        assert cfg.key("d", "m") == key and hash_obj(d, n=20) == dict_hash


def test_every_field_has_help_text():
    missing = [f.name for f in fields(TrainConfig) if not f.metadata.get("help", "").strip()]
    assert missing == []


def _train_command():
    import typer.main

    from harness.cli import app

    return typer.main.get_command(app).commands["train"]


def test_every_field_has_a_flag():
    params = {p.name: p for p in _train_command().params}
    for f in fields(TrainConfig):
        assert f.name in params, f"no --{f.name.replace('_', '-')} flag"
        if f.name in EXEMPT:
            continue
        p = params[f.name]
        assert p.default is None, f.name  # unset: the --config value, else the field default
        spelled = flag_names(f)[0].split("/")
        assert p.opts == spelled[:1] and list(p.secondary_opts) == spelled[1:], f.name
    for name, on, off in (("lora", "--lora", "--full"), ("bf16", "--bf16", "--fp32"),
                          ("merge", "--merge", "--no-merge"),
                          ("gradient_checkpointing", "--gradient-checkpointing", "--no-gradient-checkpointing")):
        assert params[name].opts == [on] and params[name].secondary_opts == [off]


def test_help_shows_each_fields_help_text(capsys, monkeypatch):
    from harness.cli import cli_main

    monkeypatch.setenv("COLUMNS", "200")  # wide enough that rich folds no word (a comma list is one word)
    capsys.readouterr()
    assert cli_main(["train", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.replace("│", " ").split())  # unwrap the rich table
    for f in fields(TrainConfig):
        if f.name not in EXEMPT:
            assert " ".join(help_text(f).split()) in shown, f.name
    assert "[default: 5e-05]" in shown and "[default: --lora]" in shown and "[default: auto]" in shown


def test_a_field_type_with_no_flag_form_fails_naming_the_field():
    @dataclass
    class Odd:
        weights: dict = None

    with pytest.raises(TypeError, match="TrainConfig.weights: no command-line form"):
        cli_type(fields(Odd)[0])


class _Captured(Exception):
    pass


@pytest.fixture()
def captured_cfg(monkeypatch):
    """Stop `harness train` at the training call and keep the TrainConfig it built."""
    import harness.train.loop

    seen = {}

    def fake_train(cfg, *a, **kw):
        seen["cfg"] = cfg
        raise _Captured

    monkeypatch.setattr(harness.train.loop, "train", fake_train)
    return seen


def _train_argv(tmp_path, tiny_model_dir, data_dir, *extra):
    return [str(a) for a in ("train", "--model", tiny_model_dir, "--method", "sdft", "-o", tmp_path / "out",
                             "--split", "paper68", "--data-dir", data_dir, "--limit", "4", "--db",
                             tmp_path / "h.db", *extra)]


def test_flags_override_the_config_file(tmp_path, tiny_model_dir, data_dir, captured_cfg):
    from harness.cli import cli_main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 1.0e-4\nseed: 3\ntopk: 7\nschedule: constant\nlora_targets: [q_proj]\nmerge: true\n"
                        "top_k: 9\n")
    argv = _train_argv(tmp_path, tiny_model_dir, data_dir, "--config", cfg_file, "--lr", "2e-4",
                       "--schedule", "cosine", "--lora-targets", "q_proj, v_proj", "--no-merge", "--fp32",
                       "--truncate-teacher-prompt", "--ema-every", "2", "--temperature", "0.7")
    with pytest.raises(_Captured):
        cli_main(["--debug", *argv])
    cfg = captured_cfg["cfg"]
    # from the flags
    assert (cfg.lr, cfg.schedule, cfg.lora_targets, cfg.merge, cfg.bf16) == (2e-4, "cosine", ("q_proj", "v_proj"),
                                                                             False, False)
    assert (cfg.truncate_teacher_prompt, cfg.ema_every, cfg.temperature) == (True, 2, 0.7)
    # from the file, where no flag was given
    assert (cfg.seed, cfg.topk, cfg.top_k) == (3, 7, 9)
    # from the TrainConfig defaults, where neither set them
    assert (cfg.lora, cfg.warmup_steps, cfg.keep_checkpoints) == (True, 10, 1)


def test_full_fine_tuning_flag(tmp_path, tiny_model_dir, data_dir, captured_cfg):
    from harness.cli import cli_main

    with pytest.raises(_Captured):
        cli_main(["--debug", *_train_argv(tmp_path, tiny_model_dir, data_dir, "--full", "--merge", "--bf16")])
    cfg = captured_cfg["cfg"]
    assert (cfg.lora, cfg.merge, cfg.bf16) == (False, True, True)


@pytest.mark.parametrize("extra,config,needle", [
    (["--topk", "0"], None, "train.topk: must be positive, got 0"),
    (["--keep-checkpoints", "0"], None, "train.keep_checkpoints: must be positive, got 0"),
    (["--schedule", "linear"], None, "train.schedule: unknown schedule 'linear'"),
    (["--jsd-beta", "1.5"], None, "train.jsd_beta: must be in (0, 1), got 1.5"),
    (["--top-k", "0"], None, "train.top_k: must be positive or unset"),
    (["--batch-size", "3", "--micro-batch-size", "2"], None, "train.batch_size: 3 is not a multiple"),
    (["--ema-every", "two"], None, "Invalid value for '--ema-every'"),
    ([], "topk: 0\n", "c.yaml: topk: must be positive, got 0"),
    (["--lr", "-1"], "topk: 5\n", "train.lr: must be positive"),
])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, tiny_model_dir, data_dir, capsys, extra, config, needle):
    from harness.cli import cli_main

    if config is not None:
        (tmp_path / "c.yaml").write_text(config)
        extra = [*extra, "--config", str(tmp_path / "c.yaml")]
    capsys.readouterr()
    rc = cli_main(_train_argv(tmp_path, tiny_model_dir, data_dir, *extra))
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "h.db").exists() and not (tmp_path / "out").exists()


def test_a_flag_replaces_a_bad_config_value(tmp_path, tiny_model_dir, data_dir, captured_cfg):
    from harness.cli import cli_main

    (tmp_path / "c.yaml").write_text("topk: 0\n")
    with pytest.raises(_Captured):
        cli_main(["--debug", *_train_argv(tmp_path, tiny_model_dir, data_dir, "--config", tmp_path / "c.yaml",
                                          "--topk", "5")])
    assert captured_cfg["cfg"].topk == 5
