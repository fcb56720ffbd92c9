"""Shared fixtures: tiny models in every recipe, a small trained tokenizer, the shared data folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hf_scratchgpt import ScratchGPTConfig, ScratchGPTForCausalLM, ScratchGPTTokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Each recipe flips a different set of architecture switches so every code path is exercised.
RECIPES = {
    "gpt2": {"preset": "tiny"},
    "modern": {"preset": "tiny-modern"},
    "mixed": {
        "preset": "tiny-modern",
        "mlp_type": "relu2",
        "num_key_value_heads": 1,
        "qk_norm": False,
        "bias": True,
        "norm_type": "layernorm",
        "tie_word_embeddings": True,
    },
}

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a little robot who loved to read stories.",
    "Hugging Face transformers make models easy to share.",
    "Emoji 🤗🚀 and CJK 你好世界 and accents café naïve.",
] * 20


def byte_level_corpus_flags(corpus: Path) -> list[str]:
    """training/pretrain.py's flags for a one-document-per-line text file and the byte-level tokenizer (no
    tokenizer training): what every test pretraining run starts from."""
    return ["--data", str(corpus), "--txt_mode", "line", "--tokenizer_name_or_path", "byte"]


def tiny_config(recipe: str = "gpt2", **overrides) -> ScratchGPTConfig:
    """A few-thousand-parameter config. A large init std makes greedy decoding decisive (no near-ties)."""
    settings = dict(RECIPES[recipe])
    preset = settings.pop("preset")
    settings.update(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        initializer_range=0.3,
        pad_token_id=1,
        eos_token_id=0,
        bos_token_id=0,
    )
    settings.update(overrides)
    return ScratchGPTConfig.from_preset(preset, **settings)


def tiny_model(recipe: str = "gpt2", seed: int = 0, **overrides) -> ScratchGPTForCausalLM:
    torch.manual_seed(seed)
    return ScratchGPTForCausalLM(tiny_config(recipe, **overrides)).eval()


@pytest.fixture(scope="session")
def tokenizer() -> ScratchGPTTokenizer:
    return ScratchGPTTokenizer.train(TRAINING_TEXT, vocab_size=300, model_max_length=64)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module of tiny models: they gain nothing from a second thread, and on a
    shared, busy 2-core machine two spinning threads made a training step 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_compile_caches():
    """Each test compiles from scratch: across a whole run, the tests that compile the same model forward would
    otherwise exhaust dynamo's per-function recompile limit (8), which fails a `fullgraph=True` compile."""
    yield
    torch.compiler.reset()


@pytest.fixture
def traced_fast_generation(monkeypatch) -> SimpleNamespace:
    """chat and serve's fast generation path with its graphs traced as inductor would, then run as they are
    (seconds, not a compilation): ``graphs`` fills with the graphs traced, ``calls`` with the keyword arguments
    `fast_generation_kwargs` was called with."""
    from hf_scratchgpt.model import fast_generation
    from hf_scratchgpt.serve import chat

    traced = SimpleNamespace(graphs=[], calls=[])

    def backend(graph, example_inputs):
        traced.graphs.append(graph)
        return graph.forward

    def fast_generation_kwargs(model, **kwargs):
        traced.calls.append(kwargs)
        return fast_generation.fast_generation_kwargs(model, backend=backend, **kwargs)

    monkeypatch.setattr(chat, "fast_generation_kwargs", fast_generation_kwargs)
    return traced
