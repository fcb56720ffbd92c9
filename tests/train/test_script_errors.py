"""The last silent paths (issue 14): damaged model folders named as such, and the command-line scripts printing
the project's own error messages as one line (a traceback only with SCRATCHGPT_DEBUG=1)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_config
from transformers import AutoTokenizer

from hf_scratchgpt import ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.cli import main as scratchgpt
from hf_scratchgpt.data import DataError
from hf_scratchgpt.train.arguments import DEBUG_ENV, parse_args, run_command
from hf_scratchgpt.train.checkpoints import DamagedModelError, model_folder_problem
from hf_scratchgpt.train.trainer import ScratchGPTTrainingArguments
from training import sft

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny chat-capable model folder, as training leaves it."""
    folder = tmp_path_factory.mktemp("model")
    ScratchGPTForCausalLM(tiny_config("gpt2", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def damaged_copy(model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "damaged"))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- 8. damaged model folders --------------------------------------------------------------------------------


def test_a_tokenizer_json_that_is_not_json_names_the_file_and_the_damage(damaged_copy):
    (damaged_copy / "tokenizer.json").write_text('{"version": "1.0", "truncat')
    for loader in (ScratchGPTTokenizer, AutoTokenizer):
        with pytest.raises(
            OSError, match=r"tokenizer\.json is not valid JSON .*the folder is damaged"
        ) as error:
            loader.from_pretrained(damaged_copy)
        assert str(damaged_copy) in str(error.value) and "save_pretrained" in str(error.value)


def test_model_folder_problem_names_the_damaged_file(model_dir, damaged_copy):
    assert model_folder_problem(model_dir) is None
    cut_in_half(damaged_copy / "model.safetensors")
    assert model_folder_problem(damaged_copy).startswith("model.safetensors is not readable (")
    shutil.copy(model_dir / "model.safetensors", damaged_copy)
    (damaged_copy / "config.json").write_text("{")
    assert model_folder_problem(damaged_copy).startswith("config.json is not valid JSON (")


def test_a_truncated_safetensors_stops_a_script_with_the_folder_named(damaged_copy, tmp_path, capsys):
    cut_in_half(damaged_copy / "model.safetensors")
    data = tmp_path / "alpaca.json"
    data.write_text(
        '[{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "Say yo.", "output": "Yo!"}]'
    )
    argv = [
        "--model_name_or_path",
        str(damaged_copy),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(tmp_path),
    ]
    assert run_command(sft.main, argv) == 1
    message = capsys.readouterr().err
    assert f"{damaged_copy} is damaged: model.safetensors is not readable" in message
    assert "Re-download it" in message and "Traceback" not in message
    with pytest.raises(DamagedModelError) as raised:  # the same error, whole, for a debugging session
        with pytest.MonkeyPatch.context() as env:
            env.setenv(DEBUG_ENV, "1")
            run_command(sft.main, argv)
    assert raised.value.__cause__ is not None  # the library's own error stays attached


def test_scratchgpt_chat_on_a_damaged_folder_says_so_in_one_line(damaged_copy, capsys):
    cut_in_half(damaged_copy / "model.safetensors")
    assert scratchgpt(["chat", str(damaged_copy)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{damaged_copy} is damaged: model.safetensors is not readable" in lines[0]


# --- 9. one-line messages --------------------------------------------------------------------------------------


def fails_with(error: Exception):
    def main():
        raise error

    return main


def test_the_projects_errors_print_as_one_line_with_a_usage_status(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_command(fails_with(DataError("data/x.txt: no text. Check the file."))) == 1
    err = capsys.readouterr().err
    assert err.endswith(": error: data/x.txt: no text. Check the file.\n") and err.count("\n") == 1
    # An argument check is a usage error: status 2, like argparse's.
    parse = lambda: parse_args((ScratchGPTTrainingArguments,), ["--output_dir", "x", "--max_steps", "-5"])  # noqa: E731
    assert run_command(parse) == 2
    assert "--max_steps -5: must be a positive number of steps" in capsys.readouterr().err
    assert run_command(fails_with(FileExistsError("runs/a already holds a run. Pass --resume."))) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert run_command(lambda argv: {"done": argv}, ["--x"]) == 0  # a main's dict result is a success


def test_other_errors_keep_their_traceback_and_debug_shows_everything(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    # A ValueError from inside a library: a bug report needs its traceback.
    with pytest.raises(ValueError, match="Expecting value"):
        run_command(lambda: json.loads("not json"))
    with pytest.raises(ZeroDivisionError):
        run_command(lambda: 1 / 0)
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(DataError, match="no text"):
        run_command(fails_with(DataError("no text")))


def test_every_script_and_the_console_entry_use_the_one_wrapper():
    scripts = sorted([*(REPO / "training").glob("[!_]*.py"), *(REPO / "eval").glob("[!_]*.py")])
    assert len(scripts) >= 11
    for script in scripts:
        tree = ast.parse(script.read_text())
        main_blocks = [
            node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
        ]
        assert main_blocks and "run_script(main)" in ast.unparse(main_blocks[0]), script.name


def test_a_script_prints_a_data_error_as_one_line_and_exits_1(tmp_path):
    missing = tmp_path / "missing.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(DEBUG_ENV, None)
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "training" / "prepare_data.py"),
            "--data",
            str(missing),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert f"prepare_data.py: error: No such file or folder: {missing}." in done.stderr
    assert "Traceback" not in done.stderr
