"""Exports run the same model elsewhere: in-tree transformers models without the package or remote code, GGUF
through transformers' GGUF loader and llama.cpp, and `scratchgpt verify` catches an export that differs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import tiny_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_scratchgpt.cli import main as scratchgpt
from hf_scratchgpt.publish.export import ExportRefusedError, export_model, in_tree_architecture
from hf_scratchgpt.publish.export.isolated_check import gguf_config
from hf_scratchgpt.publish.export.verify import (
    LLAMA_CPP_F32_BOUND,
    RELATIVE_BOUNDS,
    ROUND_TRIP_TEXTS,
    open_llama_cpp,
    write_parity,
)

gguf = pytest.importorskip(
    "gguf", reason="GGUF export needs the `gguf` package: pip install 'hf-scratchgpt[export]'"
)

# recipe name -> (conftest recipe, overrides, the in-tree model it must become)
EXPORTABLE = {
    "gpt2": ("gpt2", {}, "GPT2LMHeadModel"),
    "modern": ("modern", {}, "Qwen3ForCausalLM"),
    # the modern recipe without QK-norm and with biases: Llama (attention_bias and mlp_bias)
    "llama": ("modern", {"qk_norm": False, "bias": True, "tie_word_embeddings": True}, "LlamaForCausalLM"),
}
PROMPT = "Once upon a time 🤗 你好, the lazy dog"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    return one_thread


def saved_model(recipe: str, tokenizer, folder):
    """A tiny model of ``recipe`` saved with the tokenizer; biases randomised so that losing one shows."""
    base, overrides, _ = EXPORTABLE[recipe]
    model = tiny_model(base, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                parameter.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def reference(model, tokenizer, new_tokens: int = 10) -> dict:
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]
    generated = model.generate(
        ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return {"ids": ids, "logits": logits, "greedy": generated[0, ids.shape[1] :].tolist()}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    """Every exportable recipe saved, exported to hf, and its reference logits and greedy tokens."""
    out = {}
    for recipe in EXPORTABLE:
        folder = tmp_path_factory.mktemp(recipe)
        model = saved_model(recipe, tokenizer, folder / "model")
        hf_dir = export_model(folder / "model", folder / "hf")
        out[recipe] = {"folder": folder, "model": model, "hf": hf_dir, **reference(model, tokenizer)}
    return out


NO_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_scratchgpt"] = None  # as on a machine without the package
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    request = json.loads(sys.argv[1])
    out = {}
    for recipe, folder in request["folders"].items():
        tokenizer = AutoTokenizer.from_pretrained(folder)  # no trust_remote_code
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        ids = torch.tensor([request["ids"][recipe]])
        with torch.no_grad():
            logits = model(ids).logits[0]
        generated = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out[recipe] = {
            "model_class": type(model).__name__, "tokenizer_class": type(tokenizer).__name__,
            "logits": logits.tolist(), "greedy": generated[0, ids.shape[1]:].tolist(),
            "encoded": [tokenizer(text)["input_ids"] for text in request["texts"]],
            "decoded": [tokenizer.decode(tokenizer(text)["input_ids"]) for text in request["texts"]],
            "chat": tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                                  tokenize=False),
            "model_max_length": tokenizer.model_max_length,
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def without_package(models, tmp_path_factory):
    """The hf exports loaded in a fresh process where hf_scratchgpt cannot be imported (one process for all)."""
    request = {
        "folders": {recipe: str(entry["hf"]) for recipe, entry in models.items()},
        "ids": {recipe: entry["ids"][0].tolist() for recipe, entry in models.items()},
        "texts": ROUND_TRIP_TEXTS,
    }
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path_factory.mktemp("hf_home")), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", NO_PACKAGE_SCRIPT, json.dumps(request)],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("recipe", list(EXPORTABLE))
def test_hf_export_is_the_same_model_without_package_or_remote_code(
    recipe, models, without_package, tokenizer
):
    entry, loaded = models[recipe], without_package[recipe]
    assert loaded["model_class"] == EXPORTABLE[recipe][2]
    assert loaded["tokenizer_class"] == "TokenizersBackend"  # transformers 5's PreTrainedTokenizerFast
    assert not list(entry["hf"].glob("*.py"))  # no code travels with the export
    config = json.loads((entry["hf"] / "config.json").read_text())
    assert "auto_map" not in config
    assert (torch.tensor(loaded["logits"]) - entry["logits"]).abs().max().item() <= 1e-5
    assert loaded["greedy"] == entry["greedy"]
    assert loaded["encoded"] == [tokenizer(text)["input_ids"] for text in ROUND_TRIP_TEXTS]
    assert loaded["decoded"] == ROUND_TRIP_TEXTS
    ours = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert loaded["chat"] == ours and "<|im_start|>assistant" in ours
    assert loaded["model_max_length"] == tokenizer.model_max_length


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("recipe", list(EXPORTABLE))
def test_gguf_loads_back_in_transformers_within_the_precision_of_its_weights(
    recipe, outtype, models, tokenizer
):
    entry = models[recipe]
    path = export_model(entry["folder"] / "model", entry["folder"] / "gguf", "gguf", outtype=outtype)
    assert path.name == f"model-{outtype}.gguf" and path.is_file()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=gguf_config(path))
    assert type(model).__name__ == EXPORTABLE[recipe][2]
    with torch.no_grad():
        diff = (model(entry["ids"]).logits[0] - entry["logits"]).abs().max().item()
    scale = entry["logits"].abs().max().item()
    if outtype == "f32":
        assert diff <= 1e-5
        assert (
            model.generate(entry["ids"], max_new_tokens=10, do_sample=False)[
                0, entry["ids"].shape[1] :
            ].tolist()
            == entry["greedy"]
        )
    else:
        # f16: 11-bit mantissa, bf16: 8-bit, q8_0: 8-bit integers per 32 weights (bounds in verify.RELATIVE_BOUNDS)
        assert 0 < diff <= RELATIVE_BOUNDS[outtype] * scale
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert [gguf_tokenizer(text)["input_ids"] for text in ROUND_TRIP_TEXTS] == [
        tokenizer(text)["input_ids"] for text in ROUND_TRIP_TEXTS
    ]
    assert [
        gguf_tokenizer.decode(tokenizer(text)["input_ids"]) for text in ROUND_TRIP_TEXTS
    ] == ROUND_TRIP_TEXTS


def test_gguf_metadata_holds_the_tokenizer_and_shapes_llama_cpp_reads(models, tokenizer):
    entry = models["modern"]
    path = export_model(entry["folder"] / "model", entry["folder"] / "meta", "gguf", outtype="q8_0")
    reader = gguf.GGUFReader(path)
    field = {name: value.contents() for name, value in reader.fields.items()}
    config = entry["model"].config
    assert (
        field["general.architecture"] == "qwen3"
        and field["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    )
    assert field["qwen3.attention.head_count_kv"] == config.num_key_value_heads
    assert field["qwen3.attention.key_length"] == config.head_dim
    assert field["qwen3.rope.freq_base"] == config.rope_theta
    assert field["tokenizer.ggml.model"] == "gpt2" and field["tokenizer.ggml.pre"] == "gpt-2"
    assert field["tokenizer.ggml.tokens"] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    types = field["tokenizer.ggml.token_type"]
    special = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    assert {i for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL} == special
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert field["tokenizer.ggml.merges"] == [" ".join(pair) for pair in merges]
    assert field["tokenizer.ggml.bos_token_id"] == tokenizer.bos_token_id
    assert field["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert field["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert field["tokenizer.ggml.add_bos_token"] is False
    assert field["tokenizer.chat_template"] == tokenizer.chat_template
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_q_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" in tensors  # the modern recipe's head is untied
    modelfile = (path.parent / "Modelfile").read_text()
    assert f"FROM ./{path.name}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert f"PARAMETER num_ctx {config.max_position_embeddings}" in modelfile


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"preset": "mixed"}, ["norm_type='layernorm'", "mlp_type='relu2'"]),
        ({"preset": "gpt2", "qk_norm": True}, ["qk_norm=True"]),
        ({"preset": "modern", "bias": True}, ["bias=True with qk_norm=True"]),
        (
            {"preset": "gpt2", "norm_type": "rmsnorm", "mlp_type": "swiglu"},
            ["norm_type='rmsnorm'", "mlp_type='swiglu'"],
        ),
    ],
)
def test_a_config_with_no_in_tree_match_is_refused_naming_the_switch(
    overrides, named, tmp_path, tokenizer, capsys
):
    overrides = dict(overrides)
    model = tiny_model(overrides.pop("preset"), vocab_size=len(tokenizer), **overrides)
    with pytest.raises(ExportRefusedError) as refused:
        in_tree_architecture(model.config)
    for switch in named:
        assert switch in str(refused.value)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    for format in ("hf", "gguf"):
        assert (
            scratchgpt(["export", str(tmp_path / "model"), str(tmp_path / format), "--format", format]) == 1
        )
        assert not (tmp_path / format).exists()  # refused before anything is written
        error = capsys.readouterr().err
        assert "error: Cannot export this ScratchGPT model" in error and named[0] in error


def test_verify_passes_for_true_exports_and_fails_for_a_tampered_one(models, tmp_path, capsys):
    entry = models["modern"]
    model_dir, export_dir = entry["folder"] / "model", tmp_path / "export"
    gguf_file = entry["folder"] / "verify" / "model-f32.gguf"
    assert scratchgpt(["export", str(model_dir), str(gguf_file), "--format", "gguf", "--outtype", "f32"]) == 0
    # as the main job calls it: export hf + GGUF into a folder, check those and any paths given
    command = ["verify", str(model_dir), str(gguf_file), "--export_to", str(export_dir), "--outtypes", "q8_0"]
    assert scratchgpt([*command, "--no_llama_cpp"]) == 0
    table = capsys.readouterr().out
    for path in ("remote code", "hf export", "model-f32.gguf", "model-q8_0.gguf"):
        assert path in table
    parity = json.loads((model_dir / "parity.json").read_text())
    assert parity["passed"] and len(parity["rows"]) == 5
    assert all(row["tokenizer_round_trip"] in ("yes", "reference") for row in parity["rows"])
    assert [row["precision"] for row in parity["rows"]] == ["f32", "f32", "f32", "f32", "q8_0"]
    assert json.loads((export_dir / "metrics.json").read_text())["paths_checked"] == 4
    assert (export_dir / "gguf" / "Modelfile").is_file() and (
        export_dir / "hf" / "model.safetensors"
    ).is_file()
    card = (model_dir / "README.md").read_text()
    assert "## Export parity" in card and "model-q8_0.gguf" in card
    write_parity(model_dir, {**parity, "rows": parity["rows"][:2]})  # a rerun replaces the card's section
    card = (model_dir / "README.md").read_text()
    assert card.count("## Export parity") == 1 and "model-q8_0.gguf" not in card
    assert card.index("## Export parity") < card.index("## How to use")

    tampered = tmp_path / "tampered"
    export_model(model_dir, tampered)
    weights = load_file(tampered / "model.safetensors")
    weights["model.layers.0.self_attn.q_norm.weight"] = (
        weights["model.layers.0.self_attn.q_norm.weight"] * 1.01
    )
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    assert scratchgpt(["verify", str(model_dir), str(tampered), "--no_card"]) == 1
    assert "**mismatch**: logits differ" in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama.cpp check skipped: llama-cpp-python is not installed (optional, builds from source: "
    "pip install llama-cpp-python)",
)
@pytest.mark.parametrize("recipe", list(EXPORTABLE))
def test_llama_cpp_runs_the_gguf_as_our_model(recipe, models, tokenizer):
    entry = models[recipe]
    path = export_model(entry["folder"] / "model", entry["folder"] / "llama_cpp", "gguf", outtype="f32")
    llm = open_llama_cpp(path, entry["model"].config.max_position_embeddings)
    ids = entry["ids"][0].tolist()
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == ids
    for text in ROUND_TRIP_TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"]
        assert llm.detokenize(tokenizer(text)["input_ids"], special=True).decode() == text
    llm.eval(ids)
    logits = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
    assert (logits - entry["logits"]).abs().max().item() <= LLAMA_CPP_F32_BOUND * entry[
        "logits"
    ].abs().max().item()
    greedy = []
    for _ in range(len(entry["greedy"])):
        greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([greedy[-1]])
    assert greedy == entry["greedy"]


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason="ONNX check skipped: needs onnx, onnxscript (torch's exporter) and onnxruntime (pip install onnx "
    "onnxscript onnxruntime)",
)
def test_onnx_graph_computes_the_same_logits_for_any_length(models, tokenizer):
    from hf_scratchgpt.publish.export.onnx_file import onnx_logits

    entry = models["modern"]
    path = export_model(entry["folder"] / "model", entry["folder"] / "onnx", "onnx")
    assert path.name == "model.onnx" and (path.parent / "tokenizer.json").is_file()
    ids = entry["ids"][0].tolist()
    scale = entry["logits"].abs().max().item()
    assert (onnx_logits(path, ids) - entry["logits"]).abs().max().item() <= RELATIVE_BOUNDS["f32"] * scale
    with torch.no_grad():  # the sequence length is dynamic: a shorter input gives the shorter prefix's logits
        assert torch.allclose(
            onnx_logits(path, ids[:3]), entry["model"](torch.tensor([ids[:3]])).logits[0], atol=1e-5
        )
