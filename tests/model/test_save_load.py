"""Saving and loading: safetensors round trips, weight ties, remote code without the package, pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import RECIPES, tiny_config, tiny_model
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

import hf_scratchgpt
from hf_scratchgpt import ScratchGPTForCausalLM, ScratchGPTForSequenceClassification, ScratchGPTModel

pytestmark = pytest.mark.compat  # part of the compatibility lane (see tests/test_compat.py)


def saved_tensor_names(directory) -> set[str]:
    with safe_open(os.path.join(directory, "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_save_load_round_trip_keeps_logits_and_ties(recipe, tmp_path):
    model = tiny_model(recipe)
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, ScratchGPTForCausalLM)
    assert all(not keys for keys in info.values()), info  # no missing / unexpected / mismatched keys
    ids = torch.randint(2, 300, (2, 11))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)

    tied = model.config.tie_word_embeddings
    names = saved_tensor_names(tmp_path)
    assert ("lm_head.weight" in names) == (not tied)  # a tied head is stored once, as the embedding
    assert "transformer.wte.weight" in names
    assert (loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()) == tied
    if model.config.position_embedding_type == "rope":
        # Non-persistent buffer: must be recomputed after loading from the meta device, not garbage.
        torch.testing.assert_close(
            loaded.transformer.rotary_emb.inv_freq, model.transformer.rotary_emb.inv_freq
        )


# The head tensors ScratchGPT checkpoints hold next to the backbone's `transformer.*`, as the task heads written by
# hand saved them (3 labels, width 64) before the heads became transformers' generic ones.
OLD_HEAD_TENSORS = {
    "ScratchGPTForSequenceClassification": {"score.weight": (3, 64)},
    "ScratchGPTForTokenClassification": {"score.weight": (3, 64), "score.bias": (3,)},
    "ScratchGPTForQuestionAnswering": {"qa_outputs.weight": (2, 64), "qa_outputs.bias": (2,)},
}


@pytest.mark.parametrize("head", sorted(OLD_HEAD_TENSORS))
def test_checkpoint_of_the_hand_written_heads_loads_with_the_same_outputs(head, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, architectures=[head])
    backbone = ScratchGPTModel(config).eval()
    tensors = {f"transformer.{name}": tensor for name, tensor in backbone.state_dict().items()}
    head_tensors = {name: torch.randn(shape) for name, shape in OLD_HEAD_TENSORS[head].items()}
    save_file(tensors | head_tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(tmp_path)

    model, info = getattr(hf_scratchgpt, head).from_pretrained(tmp_path, output_loading_info=True)
    assert all(not keys for keys in info.values()), info  # no missing / unexpected / mismatched keys
    ids = torch.randint(2, 300, (2, 9), generator=torch.Generator().manual_seed(3))
    ids[0, 6:] = config.pad_token_id  # right padding: row 0 ends at position 5
    mask = (ids != config.pad_token_id).long()
    hidden = backbone(ids, attention_mask=mask).last_hidden_state
    out = model.eval()(ids, attention_mask=mask)
    # What the hand-written heads computed from the same tensors.
    if head == "ScratchGPTForSequenceClassification":
        expected = hidden[[0, 1], [5, 8]] @ head_tensors["score.weight"].T
        torch.testing.assert_close(out.logits, expected)
    elif head == "ScratchGPTForTokenClassification":
        expected = hidden @ head_tensors["score.weight"].T + head_tensors["score.bias"]
        torch.testing.assert_close(out.logits, expected)
    else:
        spans = hidden @ head_tensors["qa_outputs.weight"].T + head_tensors["qa_outputs.bias"]
        torch.testing.assert_close(out.start_logits, spans[..., 0])
        torch.testing.assert_close(out.end_logits, spans[..., 1])
    model.save_pretrained(tmp_path / "resaved")
    assert saved_tensor_names(tmp_path / "resaved") == set(tensors) | set(head_tensors)


def test_saved_config_maps_every_head_for_remote_code(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "scratchgpt"
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
        "AutoModelForTokenClassification",
        "AutoModelForQuestionAnswering",
    }
    assert (tmp_path / "modeling_scratchgpt.py").is_file()
    assert (tmp_path / "configuration_scratchgpt.py").is_file()


def test_importing_twice_is_harmless():
    import importlib

    importlib.reload(hf_scratchgpt)
    assert AutoModelForCausalLM.from_config(tiny_config()).__class__.__name__ == "ScratchGPTForCausalLM"


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_scratchgpt"] = None  # make the package unimportable, as on a machine without it
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForQuestionAnswering,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer)
    try:
        import hf_scratchgpt  # noqa: F401
        raise SystemExit("hf_scratchgpt should not be importable here")
    except ImportError:
        pass
    lm_dir, cls_dir, ref_file = sys.argv[1:4]
    ref = torch.load(ref_file)
    result = {}
    config = AutoConfig.from_pretrained(lm_dir, trust_remote_code=True)
    result["config"] = type(config).__name__
    tok = AutoTokenizer.from_pretrained(lm_dir, trust_remote_code=True)
    result["tokenizer"] = type(tok).__name__
    result["ids_equal"] = tok(ref["text"])["input_ids"] == ref["ids"]
    result["decode_equal"] = tok.decode(ref["ids"]) == ref["text"]
    ids = torch.tensor([ref["ids"]])
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, trust_remote_code=True)
    result["lm"] = type(lm).__name__
    result["lm_logits_diff"] = (lm(ids).logits - ref["lm_logits"]).abs().max().item()
    for cache in ("dynamic", "static", "none"):  # the KV cache's name changed in transformers 5.24
        settings = {"use_cache": False} if cache == "none" else {"cache_implementation": cache}
        gen = lm.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id, **settings)
        result[f"generate_{cache}_equal"] = gen.tolist() == ref["generated"]
    # The task heads before AutoModel: each must find its backbone without AutoModel having loaded one.
    for auto in (AutoModelForTokenClassification, AutoModelForQuestionAnswering):
        head = auto.from_pretrained(lm_dir, trust_remote_code=True)
        result[auto.__name__] = type(head).__name__
    base = AutoModel.from_pretrained(lm_dir, trust_remote_code=True)
    result["base"] = type(base).__name__
    result["base_diff"] = (base(ids).last_hidden_state - ref["hidden"]).abs().max().item()
    cls = AutoModelForSequenceClassification.from_pretrained(cls_dir, trust_remote_code=True)
    result["cls"] = type(cls).__name__
    result["cls_logits_diff"] = (cls(ids).logits - ref["cls_logits"]).abs().max().item()
    print(json.dumps(result))
    """
)


def test_remote_code_loads_every_head_without_the_package(tmp_path, tokenizer):
    lm_dir, cls_dir, hf_home = tmp_path / "lm", tmp_path / "cls", tmp_path / "hf_home"
    model = tiny_model("modern", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    torch.manual_seed(1)
    classifier = ScratchGPTForSequenceClassification(model.config).eval()
    classifier.save_pretrained(cls_dir)

    text = "Once upon a time 🤗 你好"
    ids = tokenizer(text)["input_ids"]
    input_ids = torch.tensor([ids])
    generated = model.generate(
        input_ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    reference = {
        "text": text,
        "ids": ids,
        "lm_logits": model(input_ids).logits.detach(),
        "hidden": model.transformer(input_ids).last_hidden_state.detach(),
        "generated": generated.tolist(),
        "cls_logits": classifier(input_ids).logits.detach(),
    }
    torch.save(reference, tmp_path / "ref.pt")
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, str(script), str(lm_dir), str(cls_dir), str(tmp_path / "ref.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["config"] == "ScratchGPTConfig"
    assert result["tokenizer"] == "ScratchGPTTokenizer"
    assert result["ids_equal"] and result["decode_equal"]
    assert result["lm"] == "ScratchGPTForCausalLM" and result["lm_logits_diff"] == 0.0
    assert (
        result["generate_dynamic_equal"] and result["generate_static_equal"] and result["generate_none_equal"]
    )
    assert result["base"] == "ScratchGPTModel" and result["base_diff"] == 0.0
    assert result["AutoModelForTokenClassification"] == "ScratchGPTForTokenClassification"
    assert result["AutoModelForQuestionAnswering"] == "ScratchGPTForQuestionAnswering"
    assert result["cls"] == "ScratchGPTForSequenceClassification" and result["cls_logits_diff"] == 0.0
    assert (hf_home / "modules" / "transformers_modules").is_dir()  # the code really came from the folder


def test_text_generation_pipeline_matches_generate(tokenizer, tmp_path):
    model = tiny_model("gpt2", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), device="cpu")
    prompt = "Once upon a time"
    out = generator(prompt, max_new_tokens=10, do_sample=False, return_full_text=True)[0]["generated_text"]
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    expected_ids = model.generate(
        ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert out == tokenizer.decode(expected_ids[0], skip_special_tokens=True)
    assert out.startswith(prompt) and len(out) > len(prompt)


def test_text_classification_pipeline_uses_labels_and_scores(tokenizer, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "ham", 1: "spam"},
        label2id={"ham": 0, "spam": 1},
    )
    model = ScratchGPTForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classifier = pipeline("text-classification", model=str(tmp_path), device="cpu")
    texts = ["Win a free prize now", "See you at lunch tomorrow, ok?"]
    results = classifier(texts, batch_size=2)  # batched: left padding must not change the answer
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for text, result in zip(texts, results, strict=True):
        probs = loaded(**tok(text, return_tensors="pt")).logits.softmax(-1)[0]
        best = int(probs.argmax())
        assert result["label"] == config.id2label[best]
        assert result["score"] == pytest.approx(probs[best].item(), abs=1e-5)
