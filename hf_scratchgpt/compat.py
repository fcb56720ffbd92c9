"""The one home of every private hook into another library, with the versions each was checked on.

Everything else in the package uses public API. A hook here exists because no public API does the job; each
entry of ``PRIVATE_HOOKS`` names what it relies on, the releases it was checked on, and a ``check`` that
``tests/test_compat_hooks.py`` runs against the installed versions, so a release that moves or changes the
hook fails a test that names it (run in ``make test`` on the lock and in ``make compat`` on the newest and
minimum releases) instead of failing in a user's run.

One hook cannot live here: ``ScratchGPTForCausalLM._prepare_generated_length`` (the stop at a learned-position
context) is an override in ``modeling_scratchgpt.py``, which is copied as remote code and must stay
self-contained; it is listed and checked here all the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrivateHook:
    """A private name of another library the package relies on."""

    name: str  # the private name, as imported or called
    used_by: str  # where and why
    checked_on: str  # releases it was checked on
    check: Callable[[], None]  # raises AssertionError naming what changed


def register_tokenizer_by_class_name(tokenizer_class: type) -> None:
    """Let ``AutoTokenizer`` find ``tokenizer_class`` by the name a folder's ``tokenizer_config.json`` gives.

    The public ``AutoTokenizer.register(config_class, ...)`` ties the tokenizer to the config type, and then
    ``AutoTokenizer`` prefers a folder's remote code over the installed class; found by name, the installed class
    wins and the folder's ``.py`` files are never run.
    """
    from transformers.models.auto import tokenization_auto

    tokenization_auto.REGISTERED_TOKENIZER_CLASSES[tokenizer_class.__name__] = tokenizer_class


def register_peft_default_targets(
    model_type: str, like: str, norm_modules: list[str], allowed: set[str]
) -> None:
    """Give ``model_type`` PEFT's default target modules of model type ``like`` (where they are all in
    ``allowed``), and ``norm_modules`` for LayerNorm tuning, so ``LoraConfig(task_type="CAUSAL_LM")`` needs no
    ``target_modules``.

    PEFT has no registration API: it looks targets up by ``config.model_type`` in module-level tables of
    ``peft.utils.constants``, and its tuners hold references to these very dicts, so they are updated in place.
    """
    from peft.utils import constants

    for name, mapping in vars(constants).items():
        if name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(mapping, dict):
            targets = mapping.get(like)
            if isinstance(targets, list) and set(targets) <= allowed:
                mapping.setdefault(model_type, list(targets))
    constants.TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING.setdefault(model_type, norm_modules)


def reset_accelerator_state() -> None:
    """Forget Accelerate's process-wide ``AcceleratorState`` (kept: the process group in ``PartialState``), so a
    later ``Trainer`` may use another mixed precision: Accelerate otherwise refuses a second one in a process.
    Accelerate's own tests reset it the same way."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def compile_generation_on_any_device(compile_config: Any) -> None:
    """Let ``generate`` compile its decoding steps on a CPU too (it does so only on accelerators otherwise)."""
    compile_config._compile_all_devices = True


def _check_compile_all_devices() -> None:
    from transformers import CompileConfig
    from transformers.generation import GenerationMixin

    assert hasattr(CompileConfig, "_compile_all_devices"), "CompileConfig._compile_all_devices is gone"
    source = inspect.getsource(GenerationMixin._valid_auto_compile_criteria)
    assert "_compile_all_devices" in source, "generate no longer reads CompileConfig._compile_all_devices"


def _check_tokenizer_registry() -> None:
    from transformers.models.auto import tokenization_auto

    registry = getattr(tokenization_auto, "REGISTERED_TOKENIZER_CLASSES", None)
    assert isinstance(registry, dict), (
        "transformers.models.auto.tokenization_auto.REGISTERED_TOKENIZER_CLASSES is gone"
    )
    source = inspect.getsource(tokenization_auto.tokenizer_class_from_name)
    assert "REGISTERED_TOKENIZER_CLASSES" in source, "tokenizer_class_from_name no longer reads the registry"


def _check_peft_tables() -> None:
    from peft.utils import constants

    for table in (
        "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
        "TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING",
    ):
        assert isinstance(getattr(constants, table, None), dict), f"peft.utils.constants.{table} is gone"
    assert "llama" in constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, (
        "PEFT has no Llama LoRA defaults"
    )


def _check_accelerator_reset() -> None:
    from accelerate.state import AcceleratorState

    parameters = inspect.signature(AcceleratorState._reset_state).parameters
    assert "reset_partial_state" in parameters, (
        "AcceleratorState._reset_state(reset_partial_state=...) changed"
    )


def _check_generated_length() -> None:
    from transformers.generation import GenerationMixin

    expected = [
        "self",
        "generation_config",
        "has_default_max_length",
        "has_default_min_length",
        "model_input_name",
        "input_ids_length",
        "inputs_tensor",
    ]
    found = list(inspect.signature(GenerationMixin._prepare_generated_length).parameters)
    assert found == expected, (
        f"GenerationMixin._prepare_generated_length takes {found}, the override {expected}"
    )


PRIVATE_HOOKS: tuple[PrivateHook, ...] = (
    PrivateHook(
        "transformers.CompileConfig._compile_all_devices",
        "hf_scratchgpt/model/fast_generation.py: generate() compiles its decoding steps on a CPU too",
        "transformers 5.23.0, 5.24.0",
        _check_compile_all_devices,
    ),
    PrivateHook(
        "transformers.models.auto.tokenization_auto.REGISTERED_TOKENIZER_CLASSES",
        "hf_scratchgpt/__init__.py: installed tokenizer class preferred over a folder's remote code",
        "transformers 5.23.0, 5.24.0",
        _check_tokenizer_registry,
    ),
    PrivateHook(
        "peft.utils.constants.TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING (edited in place)",
        "hf_scratchgpt/__init__.py: LoRA/IA3/LN-tuning default targets for model type scratchgpt",
        "peft 0.21.0, 0.21.2",
        _check_peft_tables,
    ),
    PrivateHook(
        "accelerate.state.AcceleratorState._reset_state",
        "hf_scratchgpt/train/trainer.py switch_precision: budgeted pretraining times bf16 and fp32, keeps the faster",
        "accelerate 1.10.1, 1.15.0",
        _check_accelerator_reset,
    ),
    PrivateHook(
        "transformers.generation.GenerationMixin._prepare_generated_length (overridden)",
        "modeling_scratchgpt.py: generation stops at a learned-position context instead of failing there",
        "transformers 5.23.0, 5.24.0",
        _check_generated_length,
    ),
)
