"""Fine-tuning a pretrained ScratchGPT: the data preparation and metrics each fine-tuning stage needs.

* `classification`: labelled text -> label ids, balanced and split -> tokenized; metrics (chapter 6).
* `instructions`: Alpaca / prompt-completion / preference rows -> chat `messages` or DPO format (chapter 7).

The modules that import PEFT and TRL are not re-exported here: `classifier_tuning` (arguments, model and
evaluation of training/finetune_classifier.py), `instruction_tuning` (arguments and trainers of
training/sft.py and dpo.py) and `stage` (what every fine-tuning script saves).
"""

from . import classification, instructions
from .classification import *  # noqa: F403  (the names in classification.__all__)
from .instructions import *  # noqa: F403  (the names in instructions.__all__)

__all__ = [*classification.__all__, *instructions.__all__]
