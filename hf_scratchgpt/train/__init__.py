"""Pretraining and what every training stage shares.

* `arguments`: dataclass arguments parsed with ``TrlParser`` (+ YAML), checked in ``__post_init__``, and how
  scripts report errors;
* `trainer`: ``ScratchGPTTrainer`` and its ``TrainingArguments`` (precision, safe saves, sample generations);
* `hardware`: the precision this machine does well, and its description for reports;
* `optim`, `schedule`: Muon + AdamW, and a learning-rate schedule that follows the time a budget leaves;
* `budget`: fitting a run (model size, steps) to a time budget; `budget_plan`: a pretraining run measured,
  planned and set to its budget (budget.json);
* `checkpoints`: saves and resumes that never lose or half-write a model;
* `pretraining`: the pretraining stage (``training/pretrain.py``) as library functions;
* `speedrun`, `stage_files`: the main job's stages, and the files each stage writes.
"""
