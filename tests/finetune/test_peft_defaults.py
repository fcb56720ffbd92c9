"""PEFT defaults for model type "scratchgpt": LoRA without target_modules trains, saves, reloads and merges."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model
from peft import LoraConfig, PeftModel, get_peft_model

from hf_scratchgpt import ScratchGPTForCausalLM

IDS = torch.randint(2, 300, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("recipe", ["gpt2", "modern"])
def test_lora_with_default_targets_trains_under_activation_checkpointing(recipe):
    model = tiny_model(recipe).train()
    model.activation_checkpointing_enable()
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4))  # no target_modules
    targeted = {
        name.split(".")[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")
    }
    assert targeted == {"q_proj", "v_proj"}
    peft_model(IDS, labels=IDS).loss.backward()
    lora_b = {name: p.grad for name, p in peft_model.named_parameters() if "lora_B" in name}
    assert len(lora_b) == 2 * model.config.num_hidden_layers
    assert all(grad is not None and grad.abs().sum() > 0 for grad in lora_b.values())


def test_lora_adapter_reloads_and_merges_to_identical_logits(tmp_path):
    base = tiny_model("gpt2")
    base.save_pretrained(tmp_path / "base")
    config = LoraConfig(task_type="CAUSAL_LM", r=4, init_lora_weights=False)  # non-zero B: the adapter acts
    adapted = get_peft_model(base, config).eval()
    with torch.no_grad():
        expected = adapted(IDS).logits
        assert not torch.allclose(
            expected, ScratchGPTForCausalLM.from_pretrained(tmp_path / "base")(IDS).logits
        )
    adapted.save_pretrained(tmp_path / "adapter")

    reloaded = PeftModel.from_pretrained(
        ScratchGPTForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, expected, rtol=0, atol=0)
        merged = reloaded.merge_and_unload()
        assert type(merged) is ScratchGPTForCausalLM
        torch.testing.assert_close(merged(IDS).logits, expected, rtol=1e-5, atol=1e-5)
