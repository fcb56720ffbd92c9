"""The main job: data -> tokenizer -> pretraining -> samples -> report, within a time budget.

    make speedrun                                            # or: python training/speedrun.py
    python training/speedrun.py --time_budget 30 --data-dir ../shared/data/pretrain --txt_mode line
    python training/speedrun.py --resume                     # continue an interrupted run; complete stages are skipped

Each stage is a script of its own (training/prepare_data.py, training/train_tokenizer.py, training/pretrain.py,
eval/generate_samples.py), run as a separate process that reads the previous stages' folders and writes its own:

    RUN/data/       the corpus, loaded once and split (a `datasets` folder)
    RUN/tokenizer/  BPE trained on the train split only
    RUN/pretrain/   the model (+ tokenizer), checkpoints, budget.json; RUN/model points to it
    RUN/samples/    generations of the reloaded model
    RUN/report.md, RUN/metrics.json, RUN/loss_curves.png, RUN/speedrun.json

--time_budget (minutes, default 15) covers the whole job: each stage gets its share of the time left, and
pretraining measures this machine's speed to choose the model size and the number of steps. Data options
(--data, --data_dir, --txt_mode, --dataset_config, ...) go to the data stage, --tokenizer_vocab_size to the
tokenizer, and any other option (e.g. --preset tiny, --max_steps 300, --precision fp32) to pretrain.py with
training/configs/tiny.yaml; an explicit --max_steps turns the budget off for pretraining.
"""

import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_scratchgpt.report import build_report
from hf_scratchgpt.speedrun import Stage, StageFailed, check_run_dir, run_stages

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Options of the data stage (each takes one value); everything else goes to pretrain.py.
DATA_OPTIONS = {"data", "data_dir", "dataset_config", "dataset_split", "text_column", "txt_mode", "max_documents",
                "validation_fraction", "split_mode", "seed"}  # fmt: skip


@dataclass
class SpeedrunArguments:
    run_dir: str = field(
        default="outputs/speedrun", metadata={"help": "Folder for everything the run writes."}
    )
    time_budget: float = field(default=15.0, metadata={"help": "Minutes for the whole job (0: no budget)."})
    resume: bool = field(
        default=False, metadata={"help": "Continue the run in --run_dir, skipping complete stages."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Delete --run_dir first and start over."})
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the trained tokenizer."})


def split_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate the data stage's options from pretrain.py's (``--name value`` or ``--name=value``)."""
    data, rest = [], []
    i = 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0].lstrip("-").replace("-", "_")
        takes_next = "=" not in argv[i] and i + 1 < len(argv)
        target = data if name in DATA_OPTIONS else rest
        target += argv[i : i + 2] if takes_next and not argv[i + 1].startswith("--") else argv[i : i + 1]
        i += 2 if takes_next and not argv[i + 1].startswith("--") else 1
    return data, rest


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, passthrough = HfArgumentParser(SpeedrunArguments).parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    run = Path(args.run_dir)
    if args.overwrite and run.exists():
        shutil.rmtree(run)
    check_run_dir(run, args.resume)
    data_options, pretrain_options = split_options(passthrough)
    budget = args.time_budget or None
    python = sys.executable

    stages = [
        Stage("data", [python, str(HERE / "prepare_data.py"), "--output_dir", str(run / "data"), *data_options],
              run / "data", weight=0.02),
        Stage("tokenizer", [python, str(HERE / "train_tokenizer.py"), "--data", str(run / "data"),
                            "--vocab_size", str(args.tokenizer_vocab_size), "--output_dir", str(run / "tokenizer")],
              run / "tokenizer", weight=0.04),
        Stage("pretrain", [python, str(HERE / "pretrain.py"), "--config", str(HERE / "configs" / "tiny.yaml"),
                           "--data", str(run / "data"), "--tokenizer_name_or_path", str(run / "tokenizer"),
                           "--output_dir", str(run / "pretrain"), *pretrain_options],
              run / "pretrain", weight=0.88,
              budget_flag=None if "--max_steps" in pretrain_options else "--time_budget",
              resume_args=["--resume_from_checkpoint", "latest"]),
        Stage("samples", [python, str(REPO / "eval" / "generate_samples.py"),
                          "--model_name_or_path", str(run / "pretrain"), "--output_dir", str(run / "samples")],
              run / "samples", weight=0.03),
    ]  # fmt: skip

    resume_command = shlex.join(["python", "training/speedrun.py", *[a for a in argv if a != "--overwrite"]])
    if "--resume" not in argv:
        resume_command += " --resume"
    try:
        run_stages(stages, run, budget, args.resume, resume_command)
    except StageFailed as failure:
        sys.exit(f"speedrun: {failure}")
    model_link = run / "model"  # the README's name for the pretrained model folder
    if not model_link.exists():
        model_link.symlink_to("pretrain")
    report = build_report(run)
    print(f"== done: {report} (model in {run / 'pretrain'})")
    return report


if __name__ == "__main__":
    main()
