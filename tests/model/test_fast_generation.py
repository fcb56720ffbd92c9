"""The fast paths: the causal-LM loss without logits, loss-only evaluation, the written-out attention of bf16
training on a CPU, compiled steps, fast generation."""

from __future__ import annotations

import pytest
import torch
from conftest import RECIPES, tiny_model
from torch import nn

from hf_scratchgpt.model.fast_generation import fast_generation_kwargs
from hf_scratchgpt.model.modeling_scratchgpt import (
    MATMUL_ATTENTION_MAX_LENGTH,
    causal_lm_loss_without_logits,
    eager_attention_forward,
    matmul_causal_attention,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(rows: int = 3, length: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels with ignored (-100) positions in the first row, as a prompt mask makes them."""
    ids = torch.randint(2, 300, (rows, length), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[0, :7] = -100
    return ids, labels


def loss_and_grads(
    model: nn.Module, bf16: bool = False, **kwargs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids, labels = batch()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        output = model(ids, labels=labels, **kwargs)
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.loss.detach(), grads


def assert_grads_close(expected: dict, found: dict, rtol: float) -> None:
    """Every gradient within ``rtol`` of the expected one's norm, give or take ``rtol`` of the largest gradient's
    (some, like a key bias's, are zero in exact arithmetic: rounding noise only)."""
    assert expected.keys() == found.keys()
    largest = max(g.norm() for g in expected.values())
    for name, grad in expected.items():
        assert (found[name] - grad).norm() <= rtol * (grad.norm() + largest), name


def relative_error(expected: dict, found: dict) -> float:
    """The distance between two sets of gradients, relative to the expected set's size."""
    difference = sum((found[name] - grad).square().sum() for name, grad in expected.items())
    return float((difference / sum(grad.square().sum() for grad in expected.values())).sqrt())


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_loss_without_logits_equals_the_plain_loss_and_gradients(recipe):
    model = tiny_model(recipe).train()
    plain_loss, plain_grads = loss_and_grads(model, skip_logits=False)
    loss, grads = loss_and_grads(model)  # training with labels: the logits are skipped by default
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert_grads_close(plain_grads, grads, rtol=1e-5)


def test_loss_without_logits_under_bf16_autocast_is_as_close_to_fp32_as_the_plain_loss():
    model = tiny_model().train()
    exact_loss, exact_grads = loss_and_grads(model, skip_logits=False)
    plain_loss, plain_grads = loss_and_grads(model, bf16=True, skip_logits=False)
    loss, grads = loss_and_grads(model, bf16=True)
    # bf16 matrix products round both ways alike; the chunked loss keeps softmax in float32 as autocast does.
    assert abs(loss - exact_loss) <= 2 * abs(plain_loss - exact_loss) + 1e-3
    assert relative_error(exact_grads, grads) <= 1.5 * relative_error(exact_grads, plain_grads) + 1e-3
    assert relative_error(exact_grads, grads) < 0.05


def test_loss_without_logits_takes_the_trainer_loss_arguments():
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 40, (2, 9))
    labels[1, :4] = -100
    logits = hidden @ weight.T
    # num_items_in_batch (gradient accumulation): a sum divided by the count Trainer gives.
    expected = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 40), labels[:, 1:].reshape(-1), reduction="sum"
    )
    found = causal_lm_loss_without_logits(hidden, weight, labels, num_items_in_batch=torch.tensor(5))
    torch.testing.assert_close(found, expected / 5)
    # shift_labels (context parallelism): already shifted, scored as given.
    shifted = torch.randint(0, 40, (2, 9))
    expected = nn.functional.cross_entropy(logits.reshape(-1, 40), shifted.reshape(-1))
    torch.testing.assert_close(
        causal_lm_loss_without_logits(hidden, weight, labels, shift_labels=shifted), expected
    )


def test_loss_without_logits_spans_several_chunks(monkeypatch):
    from hf_scratchgpt.model import modeling_scratchgpt

    monkeypatch.setattr(modeling_scratchgpt, "LOSS_CHUNK_LOGITS", 300 * 5)  # 5 tokens per chunk
    model = tiny_model().train()
    plain_loss, plain_grads = loss_and_grads(model, skip_logits=False)
    loss, grads = loss_and_grads(model)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert_grads_close(plain_grads, grads, rtol=1e-5)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_written_out_attention_equals_the_eager_reference(recipe):
    model = tiny_model(recipe)  # "mixed" shares one key/value head among four query heads
    attention = model.transformer.h[0].attn
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    generator = torch.Generator().manual_seed(0)
    for length, key_length in ((9, 9), (3, 9)):  # the second: queries after 6 cached positions
        query = torch.randn(2, heads, length, 16, generator=generator)
        key, value = (torch.randn(2, kv_heads, key_length, 16, generator=generator) for _ in "kv")
        causal = torch.full((length, key_length), float("-inf")).triu(key_length - length + 1)
        expected, _ = eager_attention_forward(attention, query, key, value, causal, scaling=0.25)
        found, weights = matmul_causal_attention(attention, query, key, value, None, scaling=0.25)
        torch.testing.assert_close(found, expected, rtol=1e-6, atol=1e-6)
        assert weights is None  # as sdpa's, which it replaces


def test_bf16_training_on_a_cpu_writes_attention_out_and_agrees_with_sdpa():
    model = tiny_model().train()
    attention = model.transformer.h[0].attn
    ids, labels = batch()
    mask = torch.ones_like(ids)
    query = torch.zeros(1, 4, ids.shape[1], 16, dtype=torch.bfloat16)
    assert attention.attention_function(query, None) is matmul_causal_attention
    with torch.no_grad():  # inference keeps sdpa's fused forward
        assert attention.attention_function(query, None) is not matmul_causal_attention
    assert attention.attention_function(query.float(), None) is not matmul_causal_attention
    assert attention.attention_function(query, mask) is not matmul_causal_attention  # padding: sdpa's mask
    long_query = torch.zeros(1, 4, MATMUL_ATTENTION_MAX_LENGTH + 1, 16, dtype=torch.bfloat16)
    assert attention.attention_function(long_query, None) is not matmul_causal_attention

    exact_loss, exact_grads = loss_and_grads(model)  # float32: sdpa
    model.set_attn_implementation("eager")
    eager_loss, eager_grads = loss_and_grads(model, bf16=True)
    model.set_attn_implementation("sdpa")
    loss, grads = loss_and_grads(model, bf16=True)  # written out
    assert abs(loss - exact_loss) <= 2 * abs(eager_loss - exact_loss) + 1e-3
    assert relative_error(exact_grads, grads) <= 1.5 * relative_error(exact_grads, eager_grads) + 1e-3


def test_logits_are_skipped_only_when_training_with_labels_or_asked():
    model = tiny_model()
    ids, labels = batch()
    assert model.eval()(ids, labels=labels).logits.shape == (3, 24, 300)
    training = model.train()(ids, labels=labels)
    assert training.logits is None and training.loss is not None
    both = model(ids, labels=labels, skip_logits=False)
    assert both.logits.shape == (3, 24, 300)
    torch.testing.assert_close(both.loss, training.loss)
    assert model(ids).logits is not None  # no labels: the logits are the output
    with torch.no_grad():
        evaluation = model.eval()(ids, labels=labels, skip_logits=True)
    assert evaluation.logits is None
    torch.testing.assert_close(evaluation.loss, both.loss)
    with pytest.raises(ValueError, match="needs labels"):
        model(ids, skip_logits=True)


def test_a_replaced_loss_function_or_head_is_honoured():
    model = tiny_model().train()
    ids, labels = batch()
    model.loss_function = lambda logits, labels, **kwargs: logits.float().square().mean()
    expected = model(ids, skip_logits=False).logits.float().square().mean()
    torch.testing.assert_close(model(ids, labels=labels).loss, expected)
    assert not model.loss_can_skip_logits()

    model = tiny_model("modern").train()  # untied head
    model.lm_head.register_forward_hook(lambda module, args, output: output * 2)  # e.g. an adapter's hook
    assert not model.loss_can_skip_logits()
    doubled = model(ids, skip_logits=False).logits
    expected = nn.functional.cross_entropy(doubled[:, :-1].reshape(-1, 300), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(model(ids, labels=labels).loss, expected)


def test_a_frozen_head_gets_no_gradient_and_the_rest_the_same():
    model = tiny_model("modern").train()  # untied head, frozen as when only adapters train
    model.lm_head.weight.requires_grad_(False)
    plain_loss, plain_grads = loss_and_grads(model, skip_logits=False)
    loss, grads = loss_and_grads(model)
    assert "lm_head.weight" not in grads
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert_grads_close(plain_grads, grads, rtol=1e-5)


def test_training_curves_with_and_without_logits_match():
    losses = {}
    for skip in (False, True):
        model = tiny_model(seed=3).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
        losses[skip] = []
        for step in range(6):
            ids, labels = batch(seed=step)
            loss = model(ids, labels=labels, skip_logits=skip).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[skip].append(loss.item())
    assert losses[True][-1] < losses[True][0] - 0.1  # it learns
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-4)


def test_compiled_training_step_equals_eager():
    # aot_eager runs dynamo and AOTAutograd (what inductor compiles) without generating code: seconds, not minutes.
    model = tiny_model().train()
    eager_loss, eager_grads = loss_and_grads(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss, grads = loss_and_grads(compiled)
    torch.testing.assert_close(loss, eager_loss)
    assert_grads_close(eager_grads, {k.removeprefix("_orig_mod."): v for k, v in grads.items()}, rtol=1e-5)


def test_compiled_gelu_is_gpt2s_gelu_and_gradient():
    from hf_scratchgpt.model.modeling_scratchgpt import gelu_tanh

    x = torch.linspace(-8, 8, 4001, dtype=torch.float64, requires_grad=True)
    expected = nn.functional.gelu(x, approximate="tanh")
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    compiled = torch.compile(gelu_tanh, backend="aot_eager", fullgraph=True)(x)  # the sigmoid form
    (grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_the_mask_of_unpacked_training_batches_is_left_to_sdpa_is_causal():
    from torch._dynamo.testing import CompileCounterWithBackend

    model = tiny_model().train()
    ids, labels = batch()
    counter = CompileCounterWithBackend("eager")
    torch.compile(model, backend=counter, fullgraph=True)(ids, labels=labels)
    attention = [n for g in counter.graphs for n in g.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert attention and all(
        n.kwargs.get("is_causal") and n.kwargs.get("attn_mask") is None for n in attention
    )


def test_fast_generation_compiles_the_decoding_steps_and_gives_the_same_tokens():
    model = tiny_model()
    ids = torch.randint(2, 300, (2, 5), generator=torch.Generator().manual_seed(2))
    greedy = dict(max_new_tokens=10, do_sample=False, pad_token_id=1, eos_token_id=None)
    graphs = []

    def backend(graph, example_inputs):  # traces as inductor would, then runs the graph as it is: seconds
        graphs.append(graph)
        return graph.forward

    fast = fast_generation_kwargs(model, backend=backend)
    assert (
        fast["cache_implementation"] == "static"
        and fast["max_cache_len"] == model.config.max_position_embeddings
    )
    torch.testing.assert_close(model.generate(ids, **greedy, **fast), model.generate(ids, **greedy))
    assert len(graphs) == 1  # on a CPU too: one graph, for every decoding step


def test_fast_generation_on_a_cpu_calls_inductor_code_from_cpp():
    model = tiny_model()
    compile_config = fast_generation_kwargs(model)["compile_config"]
    # torch.compile refuses a mode together with backend options: on a CPU there is no CUDA-graph mode to keep.
    assert compile_config.options == {"cpp_wrapper": True} and compile_config.mode is None
    assert compile_config.fullgraph and compile_config.dynamic is False
    # Other backends get no inductor options (they would reject them).
    assert fast_generation_kwargs(model, backend="eager")["compile_config"].options is None


def test_loss_without_logits_computes_no_gradients_when_none_can_be_asked_for(monkeypatch):
    from hf_scratchgpt.model import modeling_scratchgpt

    asked = []
    forward = modeling_scratchgpt.ChunkedLinearCrossEntropy.forward

    def recording_forward(ctx, *args):
        asked.append(ctx.needs_input_grad[:2])
        return forward(ctx, *args)

    monkeypatch.setattr(
        modeling_scratchgpt.ChunkedLinearCrossEntropy, "forward", staticmethod(recording_forward)
    )
    model = tiny_model().train()
    ids, labels = batch()
    with torch.no_grad():
        model(ids, labels=labels)
    model(ids, labels=labels)
    assert asked == [(False, False), (True, True)]


def test_loss_only_evaluation_skips_the_logits_and_reports_the_same_loss(tmp_path):
    from datasets import Dataset

    from hf_scratchgpt.train.trainer import ScratchGPTTrainer, ScratchGPTTrainingArguments

    model = tiny_model()
    ids, labels = batch(rows=4)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("skip_logits")), with_kwargs=True
    )
    args = ScratchGPTTrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=4,
        report_to="none",
        precision="fp32",
        use_cpu=True,
    )
    trainer = ScratchGPTTrainer(model=model, args=args, eval_dataset=data)
    with torch.no_grad():
        expected = model(ids, labels=labels, skip_logits=False).loss.item()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert seen[-1] is True
    predictions = trainer.predict(data)  # logits asked for: computed as usual
    assert predictions.predictions.shape == (4, 24, 300) and seen[-1] is None


def test_fast_generation_replays_cuda_graphs_on_a_gpu_unless_asked_not_to(monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))  # as a GPU's
    assert fast_generation_kwargs(model)["compile_config"].mode == "reduce-overhead"
    without = fast_generation_kwargs(model, cuda_graphs=False)["compile_config"]
    assert without.mode is None and without.options is None  # compiled steps, no CUDA graphs, no cpp_wrapper
