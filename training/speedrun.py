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
    with --task_data_dir DIR (e.g. ../shared/data) or a Hub dataset id laid out the same way, else skipped
    with a one-line notice:
    RUN/classifier-sms/  SMS spam classifier (training/finetune_classifier.py)
    RUN/sft/, RUN/dpo/   instruction tuning and preference tuning (training/sft.py, training/dpo.py)
    RUN/eval/{lm_eval,classification,instruction}/  eval/run_lm_eval.py, eval/classification.py,
                         eval/instruction_following.py (ROUGE; an LLM judge with --judge_model)
    RUN/report.md, RUN/metrics.json, RUN/loss_curves_*.png, RUN/speedrun.json

--time_budget (minutes, default 15) covers the whole job: each stage gets its share of the time left, and
pretraining measures this machine's speed to choose the model size and the number of steps. Data options
(--data, --data_dir, --txt_mode, --dataset_config, ...) go to the data stage, --tokenizer_vocab_size to the
tokenizer, and any other option (e.g. --preset tiny, --max_steps 300, --precision fp32) to pretrain.py with
training/configs/tiny.yaml; an explicit --max_steps turns the budget off for pretraining. --seed (default:
each script's own) goes to every stage that takes one, so one seed reproduces the whole run.
"""

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_scratchgpt.publish.cards import write_model_card
from hf_scratchgpt.publish.report import build_report
from hf_scratchgpt.train.arguments import InvalidArgumentsError, ValidatedArguments, run_script
from hf_scratchgpt.train.speedrun import (
    Stage,
    StageCommands,
    StageFailed,
    check_run_dir,
    fetch_task_data,
    resume_command,
    run_stages,
    split_options,
    task_file,
)
from hf_scratchgpt.train.stage_files import METRICS_FILE

HERE = Path(__file__).resolve().parent
CONFIGS, EVAL = HERE / "configs", HERE.parent / "eval"
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
}
LM_EVAL_TASKS = "arc_easy_local,arc_challenge_local,hellaswag_local,boolq_local,winogrande_local"


@dataclass
class SpeedrunArguments(ValidatedArguments):
    run_dir: str = field(
        default="outputs/speedrun", metadata={"help": "Folder for everything the run writes."}
    )
    time_budget: float = field(default=15.0, metadata={"help": "Minutes for the whole job (0: no budget)."})
    resume: bool = field(
        default=False, metadata={"help": "Continue the run in --run_dir, skipping complete stages."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Delete --run_dir first and start over."})
    seed: int | None = field(
        default=None, metadata={"help": "Seed of every stage that takes one (default: each script's own)."}
    )
    tokenizer_vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the trained tokenizer."})
    task_data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder (or Hub dataset id) with the fine-tuning and evaluation data, laid out as ../shared/data: "
            "classification/sms_spam.tsv, instruction/*.json, eval/*.jsonl. Stages whose file is missing are skipped."
        },
    )
    eval_limit: int = field(default=50, metadata={"help": "Examples per evaluation task in the main job."})
    judge_model: str | None = field(
        default=None, metadata={"help": "A local chat model (folder or Hub id) to judge instruction answers."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_budget < 0:  # would silently mean "no budget" and pretrain the config's 1,000 steps
            raise InvalidArgumentsError(
                f"--time_budget {self.time_budget:g}: must be a positive number of minutes (default 15), or 0 to "
                "run without a budget."
            )


def main_job_stages(
    args: SpeedrunArguments, data_options: list[str], pretrain_options: list[str]
) -> list[Stage]:
    """The stages in the order they run, each its command line (``{out}``: the stage's folder in the run;
    ``--seed {seed}`` left out without --seed). Stages with a ``weight`` get that share of the time left, with
    --time_budget; the others are paid for by their reserve_seconds (process start, loading, a fixed amount
    of work), kept aside while earlier stages run."""
    task_data = fetch_task_data(args.task_data_dir)
    sms, no_sms = task_file(task_data, "classification/sms_spam.tsv")
    instructions, no_instructions = task_file(task_data, "instruction/instruction-data.json")
    preferences, no_preferences = task_file(task_data, "instruction/instruction-data-with-preference.json")
    arc, no_eval = task_file(task_data, "eval/arc_easy.jsonl")
    # The export stage writes GGUF files and checks every export against the model (scratchgpt verify).
    no_gguf = (
        None if importlib.util.find_spec("gguf") else "gguf is not installed: pip install -e '.[export]'"
    )
    run = Path(args.run_dir)
    job = StageCommands(
        run,
        {
            "training": HERE,
            "eval": EVAL,
            "configs": CONFIGS,
            "run": run,
            "seed": args.seed,
            "data_options": data_options,
            "pretrain_options": pretrain_options,
            "vocab": args.tokenizer_vocab_size,
            "sms": sms,
            "instructions": instructions,
            "preferences": preferences,
            "tasks": Path(arc).parent,
            "lm_eval_tasks": LM_EVAL_TASKS,
            "limit": args.eval_limit,
            "test_limit": args.eval_limit * 2,
            "answers": max(args.eval_limit // 5, 1),
            "judge": args.judge_model,
        },
    )
    return [
        job.stage("data", "{training}/prepare_data.py {data_options} --seed {seed} --output_dir {out}"),
        job.stage(
            "tokenizer",
            "{training}/train_tokenizer.py --data {run}/data --vocab_size {vocab} --seed {seed} "
            "--output_dir {out}",
        ),
        job.stage(
            "pretrain",
            "{training}/pretrain.py --config {configs}/tiny.yaml --data {run}/data "
            "--tokenizer_name_or_path {run}/tokenizer --seed {seed} --output_dir {out} {pretrain_options}",
            weight=0 if "--max_steps" in pretrain_options else 0.75,  # an explicit --max_steps: no budget
            resume_args=["--resume_from_checkpoint", "latest"],
        ),
        job.stage(
            "samples",
            "{eval}/generate_samples.py --model_name_or_path {run}/pretrain "
            "--prompts_from {run}/data --seed {seed} --output_dir {out}",
        ),
        job.stage(
            "export",
            "-m hf_scratchgpt.cli verify {run}/pretrain --export_to {out} --outtypes f16 q8_0",
            reserve_seconds=60,
            skip_reason=no_gguf,
        ),
        job.stage(
            "classifier",
            "{training}/finetune_classifier.py --config {configs}/finetune_sms_spam.yaml "
            "--model_name_or_path {run}/pretrain --train_file {sms} --seed {seed} --shuffle_seed {seed} "
            "--output_dir {out}",
            folder="classifier-sms",
            weight=0.06,
            reserve_seconds=45,
            skip_reason=no_sms,
        ),
        job.stage(
            "sft",
            "{training}/sft.py --config {configs}/sft_instruction.yaml --model_name_or_path "
            "{run}/pretrain --dataset_name {instructions} --seed {seed} --output_dir {out}",
            weight=0.08,
            reserve_seconds=45,
            skip_reason=no_instructions,
        ),
        job.stage(
            "dpo",
            "{training}/dpo.py --config {configs}/dpo_instruction.yaml --model_name_or_path "
            "{run}/sft/merged --dataset_name {preferences} --seed {seed} --output_dir {out}",
            weight=0.04,
            reserve_seconds=45,
            skip_reason=no_instructions or no_preferences,
        ),
        job.stage(
            "eval_lm",
            "{eval}/run_lm_eval.py --model_name_or_path {run}/pretrain --tasks {lm_eval_tasks} "
            "--data_dir {tasks} --num_fewshot 0 --limit {limit} --seed {seed} --output_dir {out}",
            folder="eval/lm_eval",
            reserve_seconds=90,
            skip_reason=no_eval,
        ),
        job.stage(
            "eval_classification",
            "{eval}/classification.py --train_file {sms} --headerless_label_text "
            "true --balance_classes undersample --model_name_or_path {run}/pretrain --num_fewshot 0,4 "
            "--classifier_path {run}/classifier-sms --max_test_samples {test_limit} --seed {seed} "
            "--shuffle_seed {seed} --output_dir {out}",
            folder="eval/classification",
            reserve_seconds=60,
            skip_reason=no_sms,
        ),
        job.stage(
            "eval_instruction",
            "{eval}/instruction_following.py --model_name_or_path {run}/sft/merged "
            "--dataset_name {instructions} --limit {answers} --seed {seed} --judge_model_name_or_path "
            "{judge} --output_dir {out}",
            folder="eval/instruction",
            reserve_seconds=60,
            skip_reason=no_instructions,
        ),
    ]


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, passthrough = HfArgumentParser(SpeedrunArguments).parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    run = Path(args.run_dir)
    if args.overwrite and run.exists():
        shutil.rmtree(run)
    check_run_dir(run, args.resume)
    stages = main_job_stages(args, *split_options(passthrough, DATA_OPTIONS))
    try:
        run_stages(
            stages, run, args.time_budget or None, args.resume, resume_command("training/speedrun.py", argv)
        )
    except StageFailed as failure:
        sys.exit(f"speedrun: {failure}")
    # The pretrained model's card, now with the evaluations of it (the model-index of its README.md).
    lm_eval = run / "eval" / "lm_eval"
    evaluations = [lm_eval] if (lm_eval / METRICS_FILE).is_file() else []
    stage_metrics = [run / stage / METRICS_FILE for stage in ("data", "tokenizer", "pretrain")]
    write_model_card(run / "pretrain", metrics=stage_metrics, eval_results=evaluations)
    model_link = run / "model"  # the README's name for the pretrained model folder
    if not model_link.exists():
        model_link.symlink_to("pretrain")
    report = build_report(run)
    print(f"== done: {report} (model in {run / 'pretrain'})")
    return report


if __name__ == "__main__":
    run_script(main)
