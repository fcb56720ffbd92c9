"""Train a byte-level BPE ScratchGPTTokenizer on a corpus and save it.

    python training/train_tokenizer.py --data ../shared/data/pretrain/tinystories_val_sample.txt \
        --txt_mode line --vocab_size 4096 --output_dir outputs/tokenizer

Any data option of hf_scratchgpt.pretraining.DataArguments works here too (Hub id, files, folders).
"""

from hf_scratchgpt.tokenizer_training import main

if __name__ == "__main__":
    main()
