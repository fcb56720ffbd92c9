"""The main job: data -> tokenizer -> pretraining -> samples [-> fine-tuning -> evaluations] -> report, in a budget.

    make speedrun                                            # or: python training/speedrun.py
    python training/speedrun.py --time_budget 30 --data-dir ../shared/data/pretrain --txt_mode line
    python training/speedrun.py --resume                     # continue an interrupted run; complete stages are skipped

Each stage is a script of its own (training/prepare_data.py, training/train_tokenizer.py, training/pretrain.py,
eval/generate_samples.py), run as a separate process that reads the previous stages' folders and writes its own:

    RUN/data/       the corpus, loaded once and split (a `datasets` folder)
    RUN/tokenizer/  BPE trained on the train split only
    RUN/pretrain/   the model (+ tokenizer), checkpoints, budget.json; RUN/model points to it
    RUN/samples/    generations of the reloaded model
    RUN/export/     the model as in-tree transformers (hf/) and GGUF (gguf/), checked by scratchgpt verify
    with --task_data_dir DIR (e.g. ../shared/data), else skipped with a one-line notice:
    RUN/classifier-sms/  SMS spam classifier (training/finetune_classifier.py)
    RUN/sft/, RUN/dpo/   instruction tuning and preference tuning (training/sft.py, training/dpo.py)
    RUN/eval/{lm_eval,classification,instruction}/  eval/run_lm_eval.py, eval/classification.py,
                         eval/instruction_following.py (ROUGE; an LLM judge with --judge_model)
    RUN/report.md, RUN/metrics.json, RUN/loss_curves_*.png, RUN/speedrun.json

--time_budget (minutes, default 15) covers the whole job: each stage gets its share of the time left, and
pretraining measures this machine's speed to choose the model size and the number of steps. Data options
(--data, --data_dir, --txt_mode, --dataset_config, ...) go to the data stage, --tokenizer_vocab_size to the
tokenizer, and any other option (e.g. --preset tiny, --max_steps 300, --precision fp32) to pretrain.py with
training/configs/tiny.yaml; an explicit --max_steps turns the budget off for pretraining.
"""

import importlib.util
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_scratchgpt.publish.cards import write_model_card
from hf_scratchgpt.publish.report import build_report
from hf_scratchgpt.train.arguments import InvalidArgumentsError, run_script
from hf_scratchgpt.train.speedrun import Stage, StageFailed, check_run_dir, run_stages

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Options of the data stage (each takes one value); everything else goes to pretrain.py.
DATA_OPTIONS = {
    "data",
    "data_dir",
    "dataset_config",
    "dataset_split",
    "text_column",
    "txt_mode",
    "max_documents",
    "validation_fraction",
    "split_mode",
    "seed",
}


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
    task_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the fine-tuning and evaluation data (as ../shared/data: classification/"
            "sms_spam.tsv, instruction/*.json, eval/*.jsonl). Stages whose file is missing are skipped."
        },
    )
    eval_limit: int = field(default=50, metadata={"help": "Examples per evaluation task in the main job."})
    judge_model: str | None = field(
        default=None, metadata={"help": "A local chat model (folder or Hub id) to judge instruction answers."}
    )

    def __post_init__(self) -> None:
        if self.time_budget < 0:  # would silently mean "no budget" and pretrain the config's 1,000 steps
            raise InvalidArgumentsError(
                f"--time_budget {self.time_budget:g}: must be a positive number of minutes (default 15), or 0 to "
                "run without a budget."
            )


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

    def task_file(relative: str) -> tuple[str, str | None]:
        """A file of --task_data_dir, and the reason to skip its stages when it is not there."""
        if not args.task_data_dir:
            return "", f"no task data: pass --task_data_dir DIR with {relative}"
        path = Path(args.task_data_dir) / relative
        return str(path), None if path.is_file() else f"{path} not found"

    sms, no_sms = task_file("classification/sms_spam.tsv")
    instructions, no_instructions = task_file("instruction/instruction-data.json")
    preferences, no_preferences = task_file("instruction/instruction-data-with-preference.json")
    arc, no_eval = task_file("eval/arc_easy.jsonl")
    # The export stage writes GGUF files and checks every export against the model (scratchgpt verify).
    no_export = (
        None if importlib.util.find_spec("gguf") else "gguf is not installed: pip install -e '.[export]'"
    )
    configs, pretrained = HERE / "configs", str(run / "pretrain")
    # Stages with a budget flag get `weight` shares of the time left; the others are paid for by their
    # reserve_seconds (process start, loading, a fixed amount of work), kept aside while earlier stages run.
    stages = [
        Stage(
            "data",
            [python, str(HERE / "prepare_data.py"), "--output_dir", str(run / "data"), *data_options],
            run / "data",
        ),
        Stage(
            "tokenizer",
            [
                python,
                str(HERE / "train_tokenizer.py"),
                "--data",
                str(run / "data"),
                "--vocab_size",
                str(args.tokenizer_vocab_size),
                "--output_dir",
                str(run / "tokenizer"),
            ],
            run / "tokenizer",
        ),
        Stage(
            "pretrain",
            [
                python,
                str(HERE / "pretrain.py"),
                "--config",
                str(configs / "tiny.yaml"),
                "--data",
                str(run / "data"),
                "--tokenizer_name_or_path",
                str(run / "tokenizer"),
                "--output_dir",
                pretrained,
                *pretrain_options,
            ],
            run / "pretrain",
            weight=0.75,
            budget_flag=None if "--max_steps" in pretrain_options else "--time_budget",
            resume_args=["--resume_from_checkpoint", "latest"],
        ),
        Stage(
            "samples",
            [
                python,
                str(REPO / "eval" / "generate_samples.py"),
                "--model_name_or_path",
                pretrained,
                "--prompts_from",
                str(run / "data"),
                "--output_dir",
                str(run / "samples"),
            ],
            run / "samples",
        ),
        Stage(
            "export",
            [
                python,
                "-m",
                "hf_scratchgpt.cli",
                "verify",
                pretrained,
                "--export_to",
                str(run / "export"),
                "--outtypes",
                "f16",
                "q8_0",
            ],
            run / "export",
            reserve_seconds=60,
            skip_reason=no_export,
        ),
        Stage(
            "classifier",
            [
                python,
                str(HERE / "finetune_classifier.py"),
                "--config",
                str(configs / "finetune_sms_spam.yaml"),
                "--model_name_or_path",
                pretrained,
                "--train_file",
                sms,
                "--output_dir",
                str(run / "classifier-sms"),
            ],
            run / "classifier-sms",
            weight=0.06,
            reserve_seconds=45,
            budget_flag="--time_budget",
            skip_reason=no_sms,
        ),
        Stage(
            "sft",
            [
                python,
                str(HERE / "sft.py"),
                "--config",
                str(configs / "sft_instruction.yaml"),
                "--model_name_or_path",
                pretrained,
                "--dataset_name",
                instructions,
                "--output_dir",
                str(run / "sft"),
            ],
            run / "sft",
            weight=0.08,
            reserve_seconds=45,
            budget_flag="--time_budget",
            skip_reason=no_instructions,
        ),
        Stage(
            "dpo",
            [
                python,
                str(HERE / "dpo.py"),
                "--config",
                str(configs / "dpo_instruction.yaml"),
                "--model_name_or_path",
                str(run / "sft" / "merged"),
                "--dataset_name",
                preferences,
                "--output_dir",
                str(run / "dpo"),
            ],
            run / "dpo",
            weight=0.04,
            reserve_seconds=45,
            budget_flag="--time_budget",
            skip_reason=no_instructions or no_preferences,
        ),
        Stage(
            "eval_lm",
            [
                python,
                str(REPO / "eval" / "run_lm_eval.py"),
                "--model_name_or_path",
                pretrained,
                "--tasks",
                "arc_easy_local,arc_challenge_local,hellaswag_local,boolq_local,winogrande_local",
                "--data_dir",
                str(Path(arc).parent),
                "--num_fewshot",
                "0",
                "--limit",
                str(args.eval_limit),
                "--output_dir",
                str(run / "eval" / "lm_eval"),
            ],
            run / "eval" / "lm_eval",
            reserve_seconds=90,
            skip_reason=no_eval,
        ),
        Stage(
            "eval_classification",
            [
                python,
                str(REPO / "eval" / "classification.py"),
                "--train_file",
                sms,
                "--headerless_label_text",
                "true",
                "--balance_classes",
                "undersample",
                "--model_name_or_path",
                pretrained,
                "--num_fewshot",
                "0,4",
                "--classifier_path",
                str(run / "classifier-sms"),
                "--max_test_samples",
                str(args.eval_limit * 2),
                "--output_dir",
                str(run / "eval" / "classification"),
            ],
            run / "eval" / "classification",
            reserve_seconds=60,
            skip_reason=no_sms,
        ),
        Stage(
            "eval_instruction",
            [
                python,
                str(REPO / "eval" / "instruction_following.py"),
                "--model_name_or_path",
                str(run / "sft" / "merged"),
                "--dataset_name",
                instructions,
                "--limit",
                str(max(args.eval_limit // 5, 1)),
                "--output_dir",
                str(run / "eval" / "instruction"),
                *(["--judge_model_name_or_path", args.judge_model] if args.judge_model else []),
            ],
            run / "eval" / "instruction",
            reserve_seconds=60,
            skip_reason=no_instructions,
        ),
    ]

    resume_command = shlex.join(["python", "training/speedrun.py", *[a for a in argv if a != "--overwrite"]])
    if "--resume" not in argv:
        resume_command += " --resume"
    try:
        run_stages(stages, run, budget, args.resume, resume_command)
    except StageFailed as failure:
        sys.exit(f"speedrun: {failure}")
    # The pretrained model's card, now with the evaluations of it (the model-index of its README.md).
    evaluations = [
        run / "eval" / name for name in ("lm_eval",) if (run / "eval" / name / "metrics.json").is_file()
    ]
    stage_metrics = [run / stage / "metrics.json" for stage in ("data", "tokenizer", "pretrain")]
    write_model_card(run / "pretrain", metrics=stage_metrics, eval_results=evaluations)
    model_link = run / "model"  # the README's name for the pretrained model folder
    if not model_link.exists():
        model_link.symlink_to("pretrain")
    report = build_report(run)
    print(f"== done: {report} (model in {run / 'pretrain'})")
    return report


if __name__ == "__main__":
    run_script(main)
