"""``scratchgpt verify MODEL [EXPORTED ...]``: is every way of loading the model the same model?

The reference is the model run by this package in float32. Every other path gets the same prompts (token
ids from our tokenizer) and is compared on the logits at every prompt position and on a greedy continuation
(``generate``'s default KV-cache path, or llama.cpp's own loop):

* ``remote code``: the saved folder loaded with ``trust_remote_code=True`` in a fresh process where
  ``hf_scratchgpt`` cannot be imported (`isolated_check`);
* each ``hf`` export, loaded there with ``AutoModelForCausalLM`` and no remote code;
* each GGUF file through transformers' GGUF loader (same process), through llama.cpp
  (``llama-cpp-python``, when importable) in this process;
* each ONNX export through ``onnxruntime`` (when importable).

Each path's tokenizer must also encode and decode unseen text (Unicode, whitespace runs, the chat tokens)
exactly as ours. The bound on max |logit difference| is relative to the largest reference logit and set by
the precision of the weights (`RELATIVE_BOUNDS`); float32 paths must also give identical greedy tokens.
The result goes to ``MODEL/parity.json`` and into the model card (``README.md``), and any failure makes the
command exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ...train.hardware import cpu_model_name
from ...train.stage_files import write_json, write_metrics
from ..cards import PARITY_FILE, PARITY_TITLE, parity_section, write_model_card
from . import isolated_check, load_scratchgpt
from .gguf_file import require_gguf
from .onnx_file import ONNX_FILE, onnx_logits

# max |logit - reference logit| / max |reference logit| allowed, by the precision of the weights. float32 paths
# differ only by the order of floating-point operations; the others by rounding each weight (f16: 11-bit
# mantissa, bf16: 8-bit, q8_0: 8-bit integers with one f16 scale per 32 weights).
RELATIVE_BOUNDS = {"f32": 1e-6, "f16": 1e-2, "bf16": 6e-2, "q8_0": 1e-1}
# llama.cpp runs its own kernels (GPT-2's GELU, for one, from a float16 table): float32 files get this bound there.
LLAMA_CPP_F32_BOUND = 1e-3
PROMPTS = ["Once upon a time, a little robot", "The quick brown fox jumps over the lazy dog. Then"]
CHAT_PROMPT = [{"role": "user", "content": "Hello! Who are you?"}]
# Text no tokenizer was trained on: accents, emoji sequences, CJK, whitespace runs, code, chat markers.
ROUND_TRIP_TEXTS = [
    "Grüße aus Köln: naïve café, ½ € 5 ✓ Ω≈π",
    "emoji 🤗🚀👩‍💻 and CJK 日本語のテキスト 한국어 中文",
    "  leading spaces,\ttabs\t\tand   runs of    spaces\n\n\nnewlines\r\n trailing  ",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
]
GGUF_FILE_TYPES = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0"}


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "tokenizers", "gguf", "llama_cpp_python", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_request(model: Any, tokenizer: Any, max_new_tokens: int = 16) -> dict[str, Any]:
    """Prompt ids, round-trip texts (and the ids to decode) and the continuation length for every path."""
    prompts = [tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] for text in PROMPTS]
    if tokenizer.chat_template:
        prompts.append(
            tokenizer.apply_chat_template(
                CHAT_PROMPT, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
    context = model.config.max_position_embeddings
    prompts = [ids[: context // 2] for ids in prompts]
    room = context - max(len(ids) for ids in prompts)
    texts = ROUND_TRIP_TEXTS
    return {
        "prompts": prompts,
        "max_new_tokens": min(max_new_tokens, room),
        "texts": texts,
        "text_ids": [tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] for text in texts],
    }


def _classify(paths: list[str]) -> list[dict[str, Any]]:
    """One entry per path to check: hf export folders, GGUF files (or folders of them), ONNX files."""
    entries = []
    for raw in paths:
        path = Path(raw)
        if path.suffix == ".onnx" or (path / ONNX_FILE).is_file():
            file = path if path.suffix == ".onnx" else path / ONNX_FILE
            entries.append(
                {
                    "label": f"onnx ({file.parent.name}), onnxruntime",
                    "kind": "onnx",
                    "path": str(file),
                    "precision": "f32",
                }
            )
        elif path.suffix == ".gguf" or (path.is_dir() and any(path.glob("*.gguf"))):
            for file in [path] if path.suffix == ".gguf" else sorted(path.glob("*.gguf")):
                entries.append(
                    {
                        "label": f"gguf ({file.name}), transformers",
                        "kind": "gguf",
                        "path": str(file),
                        "precision": _gguf_precision(file),
                    }
                )
        elif path.is_dir() and (path / "config.json").is_file():
            entries.append(
                {"label": f"hf export ({path.name})", "kind": "hf", "path": str(path), "precision": "f32"}
            )
        else:
            raise ValueError(
                f"{raw}: not an export this command knows. Pass a folder written by `scratchgpt export --format hf` "
                "(with config.json), a .gguf file (or a folder of them), or an .onnx file."
            )
    return entries


def _gguf_precision(path: Path) -> str:
    file_type = int(require_gguf().GGUFReader(path).fields["general.file_type"].contents())
    return GGUF_FILE_TYPES.get(file_type, "q8_0")


def _run_isolated(entries: list[dict[str, Any]], request: dict[str, Any]) -> dict[str, Any]:
    """Run `isolated_check` in a fresh interpreter without the package (own HF cache for remote code)."""
    with tempfile.TemporaryDirectory() as folder:
        request_file, result_file = Path(folder, "request.json"), Path(folder, "result.pt")
        request_file.write_text(json.dumps({**request, "paths": entries}), encoding="utf-8")
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env.update(HF_HOME=str(Path(folder, "hf_home")), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        run = subprocess.run(
            [sys.executable, isolated_check.__file__, str(request_file), str(result_file)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if run.returncode != 0:
            error = f"the isolated process failed: {run.stderr.strip()[-1500:]}"
            return {entry["label"]: {"error": error} for entry in entries}
        return torch.load(result_file, weights_only=False)


def open_llama_cpp(path: str | Path, context: int) -> Any:
    """A ``llama_cpp.Llama`` on a GGUF file that keeps every position's logits, with its KV cache in float32
    (llama.cpp's default float16 cache alone moves the logits by ~1e-3 of their scale)."""
    from llama_cpp import GGML_TYPE_F32, Llama

    return Llama(
        model_path=str(path),
        n_ctx=context,
        n_batch=context,
        logits_all=True,
        verbose=False,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
    )


def _llama_cpp_measure(path: str, request: dict[str, Any], context: int) -> dict[str, Any]:
    """The same measurements through llama.cpp: all-position logits, its own greedy loop, its tokenizer."""
    import numpy as np

    llm = open_llama_cpp(path, context)
    logits, greedy = [], []
    for ids in request["prompts"]:
        llm.reset()
        llm.eval(ids)
        logits.append(torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32)))
        tokens = []
        for _ in range(request["max_new_tokens"]):
            tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([tokens[-1]])
        greedy.append(tokens)
    encoded = [llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) for text in request["texts"]]
    decoded = [
        llm.detokenize(ids, special=True).decode("utf-8", errors="replace") for ids in request["text_ids"]
    ]
    return {"logits": logits, "greedy": greedy, "encoded": encoded, "decoded": decoded}


def _onnx_measure(path: str, request: dict[str, Any]) -> dict[str, Any]:
    logits = [onnx_logits(path, ids) for ids in request["prompts"]]
    greedy = []
    for ids in request["prompts"]:  # no KV cache in the graph: each step reruns the whole sequence
        sequence = list(ids)
        for _ in range(request["max_new_tokens"]):
            sequence.append(int(onnx_logits(path, sequence)[-1].argmax()))
        greedy.append(sequence[len(ids) :])
    return {"logits": logits, "greedy": greedy}


def compare(
    reference: dict[str, Any], result: dict[str, Any], request: dict[str, Any], bound: float, exact: bool
) -> dict[str, Any]:
    """One table row: max |diff| of the logits, greedy tokens identical, tokenizer round trip, verdict."""
    if "error" in result:
        return {
            "max_abs_diff": None,
            "tokens_identical": "-",
            "tokenizer_round_trip": "-",
            "passed": False,
            "note": result["error"][:500],
        }
    diff = max(
        (ours - theirs).abs().max().item()
        for ours, theirs in zip(reference["logits"], result["logits"], strict=True)
    )
    total = sum(len(tokens) for tokens in reference["greedy"])
    same = 0
    for ours, theirs in zip(reference["greedy"], result["greedy"], strict=True):
        prefix = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(len(ours), len(theirs)),
        )
        same += prefix  # tokens identical up to the first divergence
    row: dict[str, Any] = {"max_abs_diff": diff, "bound": bound, "tokens_identical": f"{same}/{total}"}
    problems = []
    if not diff <= bound:
        problems.append(f"logits differ by {diff:.3g} > {bound:.3g}")
    if exact and same != total:
        problems.append("greedy tokens differ")
    if "encoded" in result:
        round_trip = result["encoded"] == reference["encoded"] and result["decoded"] == request["texts"]
        row["tokenizer_round_trip"] = "yes" if round_trip else "no"
        if not round_trip:
            problems.append("tokenizer encodes or decodes differently")
    else:
        row["tokenizer_round_trip"] = "-"  # ONNX carries no tokenizer
    row.update(passed=not problems, note="; ".join(problems))
    return row


def verify(
    model_path: str | Path,
    exported: list[str] | None = None,
    *,
    max_new_tokens: int = 16,
    llama_cpp: bool = True,
) -> dict[str, Any]:
    """Check every loading path of a saved model against the package; returns what goes to parity.json."""
    model_path = Path(model_path)
    model, tokenizer = load_scratchgpt(model_path)
    model = model.float()
    request = build_request(model, tokenizer, max_new_tokens)
    reference = isolated_check.measure(model, tokenizer, request)
    scale = max(logits.abs().max().item() for logits in reference["logits"])
    entries = _classify(list(exported or []))
    isolated = [entry for entry in entries if entry["kind"] in ("hf", "gguf")]
    if (model_path / "modeling_scratchgpt.py").is_file():
        isolated.insert(
            0,
            {
                "label": "remote code (trust_remote_code, no package)",
                "kind": "remote_code",
                "path": str(model_path),
                "precision": "f32",
            },
        )
    results = _run_isolated(isolated, request) if isolated else {}
    rows = [
        {
            "path": "hf_scratchgpt (reference)",
            "precision": "f32",
            "max_abs_diff": 0.0,
            "bound": 0.0,
            "tokens_identical": "reference",
            "tokenizer_round_trip": "reference",
            "passed": True,
            "note": "",
        }
    ]
    for entry in isolated:
        precision = entry["precision"]
        bound = RELATIVE_BOUNDS[precision] * scale
        rows.append(
            {
                "path": entry["label"],
                "precision": precision,
                **compare(reference, results[entry["label"]], request, bound, precision == "f32"),
            }
        )
    has_llama_cpp = importlib.util.find_spec("llama_cpp") is not None
    for entry in entries:
        if entry["kind"] == "gguf" and llama_cpp and has_llama_cpp:
            precision = entry["precision"]
            bound = max(RELATIVE_BOUNDS[precision], LLAMA_CPP_F32_BOUND) * scale
            label = entry["label"].replace("transformers", "llama.cpp")
            try:
                result = _llama_cpp_measure(entry["path"], request, model.config.max_position_embeddings)
            except Exception as err:  # reported as a failed row
                result = {"error": f"{type(err).__name__}: {err}"}
            rows.append(
                {"path": label, "precision": precision, **compare(reference, result, request, bound, False)}
            )
        elif entry["kind"] == "onnx":
            result = (
                _onnx_measure(entry["path"], request) if importlib.util.find_spec("onnxruntime") else None
            )
            if result is not None:
                rows.append(
                    {
                        "path": entry["label"],
                        "precision": "f32",
                        **compare(reference, result, request, RELATIVE_BOUNDS["f32"] * scale, True),
                    }
                )
    skipped = []
    if any(entry["kind"] == "gguf" for entry in entries) and not (llama_cpp and has_llama_cpp):
        skipped.append("llama.cpp: llama-cpp-python is not installed (pip install llama-cpp-python)")
    if any(entry["kind"] == "onnx" for entry in entries) and not importlib.util.find_spec("onnxruntime"):
        skipped.append("onnxruntime: not installed (pip install onnxruntime)")
    return {
        "passed": all(row["passed"] for row in rows),
        "rows": rows,
        "skipped": skipped,
        "prompts": len(request["prompts"]),
        "new_tokens": request["max_new_tokens"],
        "reference_logit_scale": scale,
        "relative_bounds": RELATIVE_BOUNDS,
        "machine": cpu_model_name(),
        "versions": _versions(),
    }


def write_parity(model_path: str | Path, parity: dict[str, Any]) -> Path:
    """Save parity.json and put its section into the folder's card (a new card when there is none)."""
    model_path = Path(model_path)
    write_json(model_path / PARITY_FILE, parity)
    card = model_path / "README.md"
    if not card.is_file():
        return write_model_card(model_path)
    text = card.read_text(encoding="utf-8")
    section = f"## {PARITY_TITLE}\n\n{parity_section(parity)}\n\n"
    start = text.find(f"## {PARITY_TITLE}\n")
    if start >= 0:  # replace the previous run's section
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    elif "\n## How to use" in text:  # where a freshly rendered card has it
        at = text.index("\n## How to use") + 1
        text = text[:at] + section + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")
    return card


def export_for_verify(model_path: str | Path, export_dir: str | Path, outtypes: list[str]) -> list[str]:
    """The ``hf`` export and one GGUF file per ``outtypes`` entry in ``export_dir`` (``--export_to``)."""
    from . import export_hf, export_model

    export_dir = Path(export_dir)
    model, tokenizer = load_scratchgpt(model_path)
    name = Path(model_path).resolve().name
    paths = [export_hf(model, tokenizer, export_dir / "hf")]
    for outtype in outtypes:  # the Modelfile names the last one
        paths.append(
            export_model(model, export_dir / "gguf", "gguf", outtype=outtype, tokenizer=tokenizer, name=name)
        )
    return [str(path) for path in paths]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .gguf_file import OUTTYPES

    parser.add_argument("model", help="A saved ScratchGPT folder (the reference).")
    parser.add_argument("exported", nargs="*", help="Exports to check: hf folders, .gguf files, .onnx files.")
    parser.add_argument(
        "--export_to",
        default=None,
        help="First export hf and GGUF (--outtypes) into this folder, then check them; on success it gets "
        "metrics.json (the main job's stage marker) and a copy of parity.json.",
    )
    parser.add_argument(
        "--outtypes", nargs="+", choices=OUTTYPES, default=["f16", "q8_0"], help="GGUF types for --export_to."
    )
    parser.add_argument(
        "--max_new_tokens", type=int, default=16, help="Greedy continuation length (default 16)."
    )
    parser.add_argument(
        "--no_llama_cpp", action="store_true", help="Skip llama.cpp even when it is installed."
    )
    parser.add_argument("--no_card", action="store_true", help="Print only; write no parity.json or card.")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    exported = list(args.exported)
    if args.export_to:
        exported += export_for_verify(args.model, args.export_to, args.outtypes)
    parity = verify(args.model, exported, max_new_tokens=args.max_new_tokens, llama_cpp=not args.no_llama_cpp)
    print(parity_section(parity))
    if not args.no_card:
        print(
            f"Wrote {PARITY_FILE} and the card's '{PARITY_TITLE}' section: {write_parity(args.model, parity)}"
        )
    if not parity["passed"]:
        print(
            "scratchgpt verify: at least one path does not compute what the model computes (see the table)."
        )
        return 1
    if args.export_to:
        export_dir = Path(args.export_to)
        write_json(export_dir / PARITY_FILE, parity)
        metrics = {
            "passed": True,
            "paths_checked": len(parity["rows"]) - 1,
            "skipped": parity["skipped"],
            "runtime_seconds": round(time.monotonic() - started, 1),
            "machine": parity["machine"],
        }
        write_metrics(export_dir, metrics)  # last: the main job's marker that the export stage is done
    return 0


__all__ = [
    "LLAMA_CPP_F32_BOUND",
    "RELATIVE_BOUNDS",
    "build_request",
    "compare",
    "export_for_verify",
    "open_llama_cpp",
    "verify",
    "write_parity",
]
