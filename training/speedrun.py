"""The main job, from a fresh clone: tokenizer -> pretraining -> evaluation -> samples -> report.

    make speedrun                                   # or: python training/speedrun.py
    python training/speedrun.py --data-dir ../shared/data/pretrain --max_steps 300 --run_dir outputs/run2

Writes outputs/speedrun/{tokenizer,model,metrics.json,loss_curves.png,report.md}. Any field of the
tiny recipe (training/configs/tiny.yaml) can be overridden on the command line.
"""

import sys

from hf_scratchgpt.speedrun import run_speedrun

if __name__ == "__main__":
    run_speedrun(sys.argv[1:])
