"""Instruction tuning: data formats, assistant-only labels, packed == padded, SFT/LoRA/DPO end to end, GPT-2 start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TRAINING_TEXT, tiny_config
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_scratchgpt import ScratchGPTForCausalLM, ScratchGPTTokenizer
from hf_scratchgpt.data import DataError
from hf_scratchgpt.finetune.instruction_data import (
    alpaca_to_messages,
    detect_format,
    load_instruction_dataset,
    to_messages,
    to_preference,
)
from hf_scratchgpt.serve.chat import generate_reply
from training import dpo, sft

# A tiny instruction set the model can memorise in a few dozen steps.
QA = [
    ("Name a colour.", "", "Blue."),
    ("What is two plus two?", "", "Four."),
    ("Translate to French.", "cat", "chat"),
    ("Say hello.", "", "Hello!"),
]
ALPACA_ROWS = [{"instruction": q, "input": i, "output": a} for q, i, a in QA]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat_tokenizer() -> ScratchGPTTokenizer:
    texts = TRAINING_TEXT + [f"{q} {i} {a}" for q, i, a in QA] * 20
    return ScratchGPTTokenizer.train(texts, vocab_size=320, model_max_length=64)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory, chat_tokenizer) -> Path:
    """A tiny GPT-2-recipe model folder with a chat tokenizer, as pretraining would leave it."""
    folder = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    config = tiny_config("gpt2", vocab_size=len(chat_tokenizer), initializer_range=0.02)
    ScratchGPTForCausalLM(config).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "alpaca.json"
    path.write_text(json.dumps(ALPACA_ROWS * 10))
    return path


def chat_prompt(tokenizer, text: str) -> torch.Tensor:
    """The ids of a one-question conversation, ready for the assistant's answer."""
    conversation = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def tiny_gpt2_folder(folder: Path) -> Path:
    """A random GPT2LMHeadModel saved with OpenAI-style vocab.json / merges.txt (end of text last, as in GPT-2)."""
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    texts = TRAINING_TEXT + [f"{q} {i} {a}" for q, i, a in QA] * 20
    bpe.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, show_progress=False)
    )
    spec = json.loads(bpe.to_str())["model"]
    vocab = dict(spec["vocab"], **{"<|endoftext|>": len(spec["vocab"])})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in spec["merges"]) + "\n"
    )
    torch.manual_seed(0)
    end = len(vocab) - 1
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=end,
        eos_token_id=end,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


# --- formats ---------------------------------------------------------------------------------------------------


def test_alpaca_rows_become_user_and_assistant_turns():
    assert alpaca_to_messages(
        {"instruction": "Translate.", "input": "cat", "output": "chat"}, "Be brief."
    ) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Translate.\n\ncat"},
            {"role": "assistant", "content": "chat"},
        ]
    }
    pairs = Dataset.from_list([{"prompt": "Hi", "completion": "Hello"}])
    expected = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert to_messages(pairs)[0]["messages"] == expected
    chats = Dataset.from_list([{"messages": expected, "source": "x"}])
    assert to_messages(chats, system_prompt="Be brief.")[0] == {
        "messages": [{"role": "system", "content": "Be brief."}, *expected]
    }


def test_preference_rows_become_dpo_format_and_bad_layouts_are_named(shared_data):
    rows = load_instruction_dataset(shared_data / "instruction" / "instruction-data-with-preference.json")
    first = to_preference(rows.select(range(2)))[0]
    assert first["prompt"][0]["role"] == "user" and first["prompt"][0]["content"].startswith(
        rows[0]["instruction"]
    )
    assert first["chosen"] == [{"role": "assistant", "content": rows[0]["chosen"]}]
    assert first["rejected"] == [{"role": "assistant", "content": rows[0]["rejected"]}]
    assert detect_format(rows.column_names) == "preference"
    with pytest.raises(DataError, match="'instruction' \\+ 'output'"):
        detect_format(["text"])
    with pytest.raises(DataError, match="chosen"):
        to_preference(Dataset.from_list(ALPACA_ROWS))
    with pytest.raises(DataError, match="is not a file"):
        load_instruction_dataset(shared_data / "instruction" / "missing.json")


# --- records that cannot be trained on --------------------------------------------------------------------------


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_an_alpaca_record_without_its_answer_is_named_not_trained_as_none(tmp_path):
    rows = [*ALPACA_ROWS, {"instruction": "Name a fruit.", "input": ""}, {**ALPACA_ROWS[0], "output": "  "}]
    path = write_json(tmp_path / "alpaca.json", rows)
    dataset = load_instruction_dataset(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: record 4 has no 'output'")) as error:
        to_messages(dataset, source=str(path))
    message = str(error.value)
    assert (
        "'Name a fruit.'" in message
        and "1 more record" in message
        and "--skip_invalid_records true" in message
    )
    kept = to_messages(dataset, source=str(path), skip_invalid_records=True)
    assert len(kept) == len(ALPACA_ROWS)
    assert [row[-1]["content"] for row in kept["messages"]] == [answer for _, _, answer in QA]
    pairs = Dataset.from_list([{"prompt": "Hi", "completion": None}, {"prompt": "Yo", "completion": "Hey"}])
    with pytest.raises(DataError, match="pairs.jsonl: record 0 has no 'completion'"):
        to_messages(pairs, source="pairs.jsonl")


def test_a_preference_record_without_a_rejected_answer_is_named_or_skipped(tmp_path):
    rows = [
        {"instruction": "Say hi.", "chosen": "Hi!", "rejected": "Go away."},
        {"instruction": "Say bye.", "chosen": "Bye!"},
    ]
    path = write_json(tmp_path / "preference.json", rows)
    dataset = load_instruction_dataset(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: record 1 has no 'rejected'")):
        to_preference(dataset, source=str(path))
    kept = to_preference(dataset, source=str(path), skip_invalid_records=True)
    assert kept["rejected"] == [[{"role": "assistant", "content": "Go away."}]]


def test_malformed_json_names_the_file_line_and_column(tmp_path):
    array = tmp_path / "array.json"
    array.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]')
    with pytest.raises(DataError, match=re.escape(f"{array}: not valid JSON at line 2, column 22")):
        load_instruction_dataset(array)
    lines = tmp_path / "rows.jsonl"
    lines.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": }\n')
    with pytest.raises(DataError, match=re.escape(f"{lines}: not valid JSON at line 3, column 32")):
        load_instruction_dataset(lines)


# --- labels and packing -----------------------------------------------------------------------------------------


def sft_trainer(model, tokenizer, rows, tmp_path, **overrides):
    from trl import SFTTrainer

    from hf_scratchgpt.finetune.instruction_tuning import SFTArguments, cap_max_length

    args = SFTArguments(
        output_dir=str(tmp_path), precision="fp32", per_device_train_batch_size=len(rows), **overrides
    )
    cap_max_length(args, model)
    dataset = to_messages(Dataset.from_list(rows))
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)


def test_only_assistant_tokens_carry_loss(base_model_dir, chat_tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    trainer = sft_trainer(model, chat_tokenizer, ALPACA_ROWS, tmp_path, packing=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ALPACA_ROWS))])
    for row, labels, (_, _, answer) in zip(batch["input_ids"], batch["labels"], QA, strict=True):
        trained = labels != -100
        assert torch.equal(row[trained], labels[trained])
        # Exactly the answer and the end of its turn; no prompt, role marker or padding.
        assert chat_tokenizer.decode(labels[trained]) == answer + "<|im_end|>"


def test_packed_sft_equals_padded_sft_on_the_gpt2_recipe(base_model_dir, chat_tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(base_model_dir).eval()
    losses = {}
    for packing in (True, False):
        trainer = sft_trainer(model, chat_tokenizer, ALPACA_ROWS, tmp_path, packing=packing)
        rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
        batch = trainer.data_collator(rows)
        if (
            packing
        ):  # padding-free: the packed rows are flattened into one, positions restart per conversation
            assert batch["input_ids"].shape[0] == 1 and (batch["position_ids"] == 0).sum() == len(QA)
        with torch.no_grad():
            losses[packing] = model(**batch).loss.item()
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


# --- end to end ---------------------------------------------------------------------------------------------------

FAST = [
    "--precision",
    "fp32",
    "--logging_steps",
    "5",
    "--disable_tqdm",
    "true",
    "--save_strategy",
    "no",
    "--num_samples",
    "2",
    "--sample_max_new_tokens",
    "12",
    "--validation_fraction",
    "0.1",
]


def test_sft_learns_to_answer_and_stops_at_the_end_of_its_turn(base_model_dir, alpaca_file, tmp_path):
    out = tmp_path / "sft"
    metrics = sft.main(
        [
            "--model_name_or_path",
            str(base_model_dir),
            "--dataset_name",
            str(alpaca_file),
            "--output_dir",
            str(out),
            "--max_steps",
            "40",
            "--learning_rate",
            "3e-3",
            "--per_device_train_batch_size",
            "4",
            "--lr_scheduler_type",
            "constant",
            *FAST,
        ]
    )
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    # A random model's loss is about ln(vocab size) (5.8 here): it went far down.
    assert saved["eval_loss"] < 1.0 and saved["train_loss"] < 3.0 and saved["train_tokens"] > 0
    assert len(json.loads((out / "samples.json").read_text())) == 2

    model = AutoModelForCausalLM.from_pretrained(out / "merged")
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    assert model.generation_config.eos_token_id == [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    prompt = chat_prompt(tokenizer, "Name a colour.")
    new_tokens = model.generate(prompt, max_new_tokens=20, do_sample=False)[0, prompt.shape[1] :]
    assert tokenizer.decode(new_tokens) == "Blue.<|im_end|>"  # stopped at the end of its turn
    assert (
        generate_reply(model, tokenizer, [{"role": "user", "content": "Say hello."}], temperature=0)
        == "Hello!"
    )


def test_sft_skips_invalid_records_only_when_asked_and_counts_them(base_model_dir, tmp_path):
    data = write_json(tmp_path / "alpaca.json", [*ALPACA_ROWS * 5, {"instruction": "No answer here."}])
    argv = [
        "--model_name_or_path",
        str(base_model_dir),
        "--dataset_name",
        str(data),
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "4",
        *FAST,
    ]
    with pytest.raises(DataError, match=re.escape(f"{data}: record 20 has no 'output'")):
        sft.main([*argv, "--output_dir", str(tmp_path / "refused")])
    out = tmp_path / "skipped"
    metrics = sft.main([*argv, "--output_dir", str(out), "--skip_invalid_records", "true"])
    assert metrics["skipped_invalid_records"] == 1
    assert metrics["train_examples"] + metrics["eval_examples"] == len(ALPACA_ROWS) * 5
    assert json.loads((out / "metrics.json").read_text())["skipped_invalid_records"] == 1


def test_gpt2_start_converts_and_a_lora_sft_merges_exactly(tmp_path, alpaca_file):
    from peft import AutoPeftModelForCausalLM
    from transformers import GPT2Tokenizer

    from hf_scratchgpt.finetune.gpt2_start import load_model_and_tokenizer

    gpt2_dir = tiny_gpt2_folder(tmp_path / "gpt2")
    model, tokenizer = load_model_and_tokenizer(gpt2_dir)
    gpt2 = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    text = "The quick brown fox says hello."
    ids = GPT2Tokenizer(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt"))(
        text, return_tensors="pt"
    )["input_ids"]
    assert tokenizer(text)["input_ids"] == ids[0].tolist()  # GPT-2's own tokenization
    with torch.no_grad():
        ours, theirs = model.eval()(ids).logits, gpt2(ids).logits
    assert torch.allclose(ours[..., : gpt2.config.vocab_size], theirs, atol=1e-5)  # exact conversion
    # Chat-ready: the ChatML tokens and a pad distinct from end of text, with embedding rows for them.
    assert {"<|im_start|>", "<|im_end|>", "<|pad|>"} <= set(tokenizer.get_vocab())
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and model.config.vocab_size == len(tokenizer)

    out = tmp_path / "gpt2-lora"
    sft.main(
        [
            "--model_name_or_path",
            str(gpt2_dir),
            "--dataset_name",
            str(alpaca_file),
            "--output_dir",
            str(out),
            "--use_peft",
            "--lora_r",
            "8",
            "--lora_alpha",
            "16",
            "--max_steps",
            "10",
            "--learning_rate",
            "1e-2",
            "--per_device_train_batch_size",
            "4",
            *FAST,
        ]
    )
    adapter = AutoPeftModelForCausalLM.from_pretrained(
        out
    ).eval()  # base: the converted model in OUTPUT_DIR/base
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    probe = chat_prompt(tokenizer, "Say hello.")
    with torch.no_grad():
        adapter_logits, merged_logits = adapter(probe).logits, merged(probe).logits
        base_logits = model(probe).logits
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-5)  # the merge is exact
    assert not torch.allclose(adapter_logits, base_logits, atol=1e-3)  # and the adapter learned something
    assert json.loads((out / "metrics.json").read_text())["use_peft"] is True


def test_dpo_runs_from_the_sft_model_and_writes_metrics(shared_data, base_model_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    rows = json.loads((shared_data / "instruction" / "instruction-data-with-preference.json").read_text())[
        :24
    ]
    data = tmp_path / "preference.json"
    data.write_text(json.dumps(rows))
    out = tmp_path / "dpo"
    dpo.main(
        [
            "--model_name_or_path",
            str(base_model_dir),
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "4",
            "--learning_rate",
            "1e-3",
            "--per_device_train_batch_size",
            "4",
            "--per_device_eval_batch_size",
            "4",
            *FAST[2:],
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 4 and metrics["eval_pairs"] == 3 and metrics["use_peft"] is True
    assert 0.0 <= metrics["eval_reward_accuracy"] <= 1.0 and metrics["eval_loss"] > 0
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        adapter_logits = AutoPeftModelForCausalLM.from_pretrained(out).eval()(probe).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(out / "merged").eval()(probe).logits
    assert torch.allclose(adapter_logits, merged_logits, atol=1e-5)
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == 2 and all(sample["reference"] for sample in samples)
