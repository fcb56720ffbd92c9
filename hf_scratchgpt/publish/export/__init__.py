"""``scratchgpt export MODEL OUTPUT --format {hf,gguf,onnx}``: run a ScratchGPT model where remote code is not allowed.

    from hf_scratchgpt.publish.export import export_model

    export_model("runs/main/pretrain", "exported/hf")                                  # GPT2/Qwen3/Llama folder
    export_model("runs/main/pretrain", "exported/gguf", format="gguf", outtype="q8_0")  # + Ollama Modelfile

* ``hf``: the in-tree ``transformers`` model that computes exactly the same (`in_tree`), with the tokenizer
  as a plain ``PreTrainedTokenizerFast``: loads with ``AutoModelForCausalLM`` / ``AutoTokenizer`` and no
  ``trust_remote_code``, and in every tool that runs GPT-2, Qwen3 or Llama (vLLM, TGI, MLX, ...).
* ``gguf``: one GGUF file (f32, f16, bf16 or q8_0) for llama.cpp / Ollama / LM Studio, plus a ``Modelfile``.
* ``onnx``: an ONNX graph of the same in-tree model (logits for a whole sequence, no KV cache).

A model with no exact in-tree equivalent is refused (`ExportRefusedError`, naming the switch).
``scratchgpt verify`` (`hf_scratchgpt.publish.export.verify`) checks that each export computes what the model does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .in_tree import ExportRefusedError, in_tree_architecture, standard_tokenizer, to_in_tree_model

FORMATS = ("hf", "gguf", "onnx")


def load_scratchgpt(model_path: str | Path, tokenizer_path: str | Path | None = None) -> tuple[Any, Any]:
    """The ScratchGPT causal LM (saved dtype, eval mode) and its tokenizer from a saved folder.

    Raises:
        ValueError: the folder holds another model type, or no tokenizer.
    """
    from transformers import AutoConfig, AutoTokenizer

    from ...model.modeling_scratchgpt import ScratchGPTForCausalLM

    folder = Path(model_path)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} has no config.json: pass a folder written by save_pretrained (e.g. RUN/pretrain)."
        )
    model_type = AutoConfig.from_pretrained(folder).model_type
    if model_type != "scratchgpt":
        raise ValueError(
            f"{folder} holds a {model_type!r} model; `scratchgpt export` exports ScratchGPT models."
        )
    tokenizer_folder = Path(tokenizer_path or folder)
    if not (tokenizer_folder / "tokenizer.json").is_file():
        raise ValueError(
            f"{tokenizer_folder} has no tokenizer.json; an export needs the model's tokenizer. Save it next to "
            "the model (tokenizer.save_pretrained) or pass --tokenizer FOLDER."
        )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    model = ScratchGPTForCausalLM.from_pretrained(folder, dtype="auto").eval()
    return model, tokenizer


def export_hf(model: Any, tokenizer: Any, output: str | Path) -> Path:
    """Save the in-tree equivalent of ``model`` and the plain fast tokenizer into the folder ``output``."""
    output = Path(output)
    in_tree = to_in_tree_model(model)
    in_tree.save_pretrained(output)
    standard_tokenizer(tokenizer).save_pretrained(output)
    return output


def _gguf_path(output: Path, name: str, outtype: str) -> Path:
    return output if output.suffix == ".gguf" else output / f"{name}-{outtype}.gguf"


def export_model(
    model: str | Path | Any,
    output: str | Path,
    format: str = "hf",
    *,
    outtype: str = "f16",
    tokenizer: Any = None,
    name: str | None = None,
) -> Path:
    """Export a ScratchGPT model (a saved folder, or a model with ``tokenizer``) and return what was written.

    ``format="hf"``: the folder ``output``. ``"gguf"``: ``output`` itself when it ends in ``.gguf``, else
    ``output/NAME-OUTTYPE.gguf``; a ``Modelfile`` for Ollama goes next to it. ``"onnx"``: ``output/model.onnx``.

    Raises:
        ExportRefusedError: the model has a switch no in-tree architecture computes.
        ValueError: unknown ``format`` or ``outtype``, a folder without config or tokenizer.
    """
    if format not in FORMATS:
        raise ValueError(f"--format {format!r} is not one of {FORMATS}.")
    if isinstance(model, (str, Path)):
        name = name or Path(model).resolve().name
        model, tokenizer = load_scratchgpt(model, tokenizer)
    elif tokenizer is None:
        raise ValueError(
            "export_model(model_object, ...) needs tokenizer=: the export carries the tokenizer."
        )
    in_tree_architecture(model.config)  # refuse before writing anything
    output = Path(output)
    name = name or "scratchgpt"
    if format == "hf":
        return export_hf(model, tokenizer, output)
    if format == "gguf":
        from .gguf_file import write_gguf, write_modelfile

        path = write_gguf(
            to_in_tree_model(model), tokenizer, _gguf_path(output, name, outtype), outtype, name
        )
        write_modelfile(path, tokenizer, model.config.max_position_embeddings)
        return path
    from .onnx_file import write_onnx

    return write_onnx(to_in_tree_model(model), tokenizer, output)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .gguf_file import OUTTYPES

    parser.add_argument("model", help="A saved ScratchGPT folder (config.json, weights, tokenizer).")
    parser.add_argument("output", help="Folder to write (for gguf also a path ending in .gguf).")
    parser.add_argument("--format", choices=FORMATS, default="hf", help="What to write (default: hf).")
    parser.add_argument(
        "--outtype", choices=OUTTYPES, default="f16", help="GGUF weight type (default f16; norms stay f32)."
    )
    parser.add_argument("--tokenizer", default=None, help="Tokenizer folder, when not saved with the model.")
    parser.add_argument(
        "--name", default=None, help="Model name in the GGUF metadata (default: folder name)."
    )


def run(args: argparse.Namespace) -> int:
    # A refusal or bad input is a ValueError: `scratchgpt` prints it as one line and exits with status 1.
    path = export_model(
        args.model, args.output, args.format, outtype=args.outtype, tokenizer=args.tokenizer, name=args.name
    )
    print(f"Wrote {path}. Check it with: scratchgpt verify {args.model} {path}")
    return 0


__all__ = [
    "FORMATS",
    "ExportRefusedError",
    "export_hf",
    "export_model",
    "in_tree_architecture",
    "load_scratchgpt",
    "to_in_tree_model",
]
