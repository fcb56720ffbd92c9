"""Every private hook the package relies on still exists and has the shape it relies on (see hf_scratchgpt.compat).

A release that moves or changes one fails here, with the hook's name in the test id and the message."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from hf_scratchgpt import ScratchGPTTokenizer, compat

pytestmark = pytest.mark.compat


@pytest.mark.parametrize("hook", compat.PRIVATE_HOOKS, ids=[hook.name for hook in compat.PRIVATE_HOOKS])
def test_private_hook_still_has_the_shape_we_rely_on(hook):
    try:
        hook.check()
    except (AssertionError, ImportError, AttributeError) as error:
        pytest.fail(
            f"private hook {hook.name} (used by {hook.used_by}; checked on {hook.checked_on}): {error}"
        )


def test_installed_tokenizer_class_is_found_by_name():
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    assert tokenizer_class_from_name("ScratchGPTTokenizer") is ScratchGPTTokenizer


def test_lora_finds_default_targets_for_our_model_type():
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_model("modern"), peft.LoraConfig(task_type="CAUSAL_LM", r=2))
    targeted = {
        name.rsplit(".", 1)[-1] for name, _ in lora.named_modules() if name.endswith(("q_proj", "v_proj"))
    }
    assert targeted == {"q_proj", "v_proj"} and lora.get_nb_trainable_parameters()[0] > 0


def test_generation_stops_at_a_learned_position_context():
    """The `_prepare_generated_length` override: asking for more tokens than fit returns what fits."""
    model = tiny_model("gpt2")  # 64 learned positions
    ids = torch.randint(2, 300, (1, 60))
    generated = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=1, eos_token_id=None)
    assert generated.shape == (1, 64)
