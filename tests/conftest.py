"""Shared fixtures: a tiny randomly initialised Llama with a byte-level BPE tokenizer trained on
the spot, so unit tests run in seconds with no network and no packaged weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets"))

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    texts = ["Thought: I need to call getWeather.\nAction: getWeather\nAction Input: {\"city\": \"Paris\"}",
             "Your task is to answer the user's question using available tools.",
             "def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog. 0123456789"]
    f = DATA_DIR / "sdft_tooluse" / "eval_data_paper_68.json"
    if f.is_file():
        import json

        texts += [r["prompt"] for r in json.loads(f.read_text())[:10]]
    return texts


def build_tiny(tmp: Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Create a tiny model folder (config + safetensors + tokenizer) and return its path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token=None, unk_token=None)
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return tmp


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory) -> Path:
    """A second tiny model with different weights (same tokenizer vocabulary size)."""
    return build_tiny(tmp_path_factory.mktemp("tiny-model-b"), seed=1)


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded through the harness's own loader."""
    from harness.models import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture()
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"shared datasets not found at {DATA_DIR}; set HARNESS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep each test's results store in its own temp dir. The model cache (materialised aliases and
    the weight-fingerprint memo) stays shared, so real-model tests do not re-materialise."""
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "harness.db"))
    yield
