"""hf_scratchgpt: a GPT written from scratch that is a native Hugging Face ``transformers`` model.

Importing the package registers model type ``"scratchgpt"`` with ``AutoConfig``, every ``AutoModel*``
class it has a head for and ``AutoTokenizer`` (by class name), and marks the classes for remote code so that
``save_pretrained`` writes the code files next to the weights (loadable with ``trust_remote_code=True``
where this package is not installed).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.models.auto.tokenization_auto import REGISTERED_TOKENIZER_CLASSES

from .configuration_scratchgpt import PRESETS, ScratchGPTConfig
from .conversion import convert_gpt2_to_scratchgpt, convert_scratchgpt_to_gpt2
from .modeling_scratchgpt import (
    ScratchGPTForCausalLM,
    ScratchGPTForQuestionAnswering,
    ScratchGPTForSequenceClassification,
    ScratchGPTForTokenClassification,
    ScratchGPTModel,
    ScratchGPTPreTrainedModel,
)
from .tokenization_scratchgpt import ScratchGPTTokenizer

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
    REGISTERED_TOKENIZER_CLASSES[ScratchGPTTokenizer.__name__] = ScratchGPTTokenizer
    ScratchGPTTokenizer.register_for_auto_class("AutoTokenizer")


_register()

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
