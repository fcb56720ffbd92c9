"""hf_scratchgpt: a GPT written from scratch that is a native Hugging Face ``transformers`` model.

Importing the package registers model type ``"scratchgpt"`` with ``AutoConfig``, every ``AutoModel*``
class it has a head for and ``AutoTokenizer`` (by class name), and marks the classes for remote code so that
``save_pretrained`` writes the code files next to the weights (loadable with ``trust_remote_code=True``
where this package is not installed). When PEFT is installed, it also gets default target modules for
model type ``"scratchgpt"``.
"""

import importlib.util

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .compat import register_peft_default_targets, register_tokenizer_by_class_name
from .model.configuration_scratchgpt import PRESETS, ScratchGPTConfig
from .model.conversion import convert_gpt2_to_scratchgpt, convert_scratchgpt_to_gpt2
from .model.modeling_scratchgpt import (
    ScratchGPTForCausalLM,
    ScratchGPTForQuestionAnswering,
    ScratchGPTForSequenceClassification,
    ScratchGPTForTokenClassification,
    ScratchGPTModel,
    ScratchGPTPreTrainedModel,
)
from .model.tokenization_scratchgpt import ScratchGPTTokenizer

__version__ = "0.1.0"

_AUTO_CLASSES = {
    AutoModel: ScratchGPTModel,
    AutoModelForCausalLM: ScratchGPTForCausalLM,
    AutoModelForSequenceClassification: ScratchGPTForSequenceClassification,
    AutoModelForTokenClassification: ScratchGPTForTokenClassification,
    AutoModelForQuestionAnswering: ScratchGPTForQuestionAnswering,
}


def _register() -> None:
    """Register with the Auto classes; ``exist_ok`` makes a second import (or a reload) harmless."""
    AutoConfig.register(ScratchGPTConfig.model_type, ScratchGPTConfig, exist_ok=True)
    ScratchGPTConfig.register_for_auto_class()
    for auto_class, model_class in _AUTO_CLASSES.items():
        auto_class.register(ScratchGPTConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)
    # The tokenizer is registered by class name only (what tokenizer_config.json's "tokenizer_class" names),
    # not for the config type: AutoTokenizer prefers a folder's remote code over a tokenizer registered for
    # the config type even when the package is installed, but prefers a class found by name. So with the
    # package imported, trust_remote_code=True runs none of the folder's .py files (models and configs
    # already prefer installed classes).
    register_tokenizer_by_class_name(ScratchGPTTokenizer)
    ScratchGPTTokenizer.register_for_auto_class("AutoTokenizer")


# Modules every recipe has (``gate_proj`` exists only in the SwiGLU MLP); they carry Llama's names.
_PEFT_TARGETABLE = {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"}


def _register_peft_defaults() -> None:
    """Give model type "scratchgpt" PEFT's default target modules, so ``LoraConfig(task_type="CAUSAL_LM")``
    works without ``target_modules`` (PEFT looks them up by ``config.model_type``, as it does for GPT-2).

    Wherever PEFT has Llama defaults (LoRA and the adapters that copy its table, IA3, ...), ScratchGPT gets the
    same, since its projections have Llama's names; LayerNorm tuning gets GPT-2's norm names. Without the package
    (remote code), pass ``target_modules="all-linear"``.
    """
    if importlib.util.find_spec("peft") is not None:
        register_peft_default_targets(
            ScratchGPTConfig.model_type,
            like="llama",
            norm_modules=["ln_1", "ln_2", "ln_f"],
            allowed=_PEFT_TARGETABLE,
        )


_register()
_register_peft_defaults()

__all__ = [
    "PRESETS",
    "ScratchGPTConfig",
    "ScratchGPTForCausalLM",
    "ScratchGPTForQuestionAnswering",
    "ScratchGPTForSequenceClassification",
    "ScratchGPTForTokenClassification",
    "ScratchGPTModel",
    "ScratchGPTPreTrainedModel",
    "ScratchGPTTokenizer",
    "convert_gpt2_to_scratchgpt",
    "convert_scratchgpt_to_gpt2",
]
