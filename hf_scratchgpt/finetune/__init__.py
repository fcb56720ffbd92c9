"""Fine-tuning a pretrained ScratchGPT: the data each fine-tuning stage needs, and the training wiring.

* `classification_data`: labelled text -> label ids, balanced and split -> tokenized; metrics (chapter 6);
* `instruction_data`: Alpaca / prompt-completion / preference rows -> chat `messages` or DPO format (chapter 7).

The modules that import PEFT and TRL are not re-exported here: `classifier_tuning` (arguments, model and
evaluation of training/finetune_classifier.py), `instruction_tuning` (arguments and trainers of
training/sft.py and dpo.py), `stage` (what every fine-tuning script saves) and `gpt2_start` (fine-tuning that
starts from OpenAI's GPT-2).
"""

from . import classification_data, instruction_data
from .classification_data import *  # noqa: F403  (the names in classification_data.__all__)
from .instruction_data import *  # noqa: F403  (the names in instruction_data.__all__)

__all__ = [*classification_data.__all__, *instruction_data.__all__]
