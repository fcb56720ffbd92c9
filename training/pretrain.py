"""Pretrain a ScratchGPT causal LM with transformers.Trainer.

    python training/pretrain.py --config training/configs/tiny.yaml
    python training/pretrain.py --config training/configs/shakespeare_char.yaml --max_steps 200
    accelerate launch --config_file training/accelerate/ddp.yaml training/pretrain.py --config ...

Every field of ModelArguments / DataArguments (hf_scratchgpt.pretraining) and of TrainingArguments
can be set in the YAML file or overridden on the command line.
"""

from hf_scratchgpt.pretraining import main

if __name__ == "__main__":
    main()
