"""Publishing to the Hub and pulling back, against the local Hub look-alike (tests/fakes/hub_server.py).

Pushes run in this process: `huggingface_hub` reads its endpoint and offline switch from
`huggingface_hub.constants` at call time, so the `online` fixture points them at the server for one
test. Pulls with `transformers` build URLs from values fixed at import, so they run in a fresh
Python (`run_client` of test_hub_data.py), with the package, or made unimportable to load the
remote code. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from conftest import tiny_model
from fakes.hub_server import LocalHub, client_env, run_client
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hf_scratchgpt.publish import hub as hub_cli
from hf_scratchgpt.publish.cards import REPO_PLACEHOLDER, write_model_card
from hf_scratchgpt.publish.hub import PublishError, push_model_folder

WRITE, READ_ONLY, OTHER = "hf_alice_write", "hf_alice_read", "hf_bob_write"


@pytest.fixture(scope="module")
def server():
    with LocalHub() as hub:
        hub.add_token(WRITE, "alice")
        hub.add_token(READ_ONLY, "alice", role="read")
        hub.add_token(OTHER, "bob")
        yield hub


@pytest.fixture
def online(server, monkeypatch):
    """`huggingface_hub` in this process talks to the local server (online, no xet) for one test."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    server.requests.clear()
    return server


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tokenizer):
    """A saved tiny model + tokenizer + stage metrics + card, and its logits on a fixed input."""
    folder = tmp_path_factory.mktemp("push") / "model"
    model = tiny_model("modern", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "metrics.json").write_text(
        json.dumps({"num_parameters": model.num_parameters(), "train_loss": 5.0})
    )
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"optimizer state: never published")
    (folder / "merged").mkdir()  # a model of its own (an SFT stage's merged model): its own repo
    (folder / "merged" / "config.json").write_text("{}")
    write_model_card(
        folder, metrics=folder / "metrics.json", eval_results={"name": "ppl", "perplexity": 40.0}
    )
    ids = torch.tensor([tokenizer("Once upon a time 🤗")["input_ids"]])
    torch.save({"ids": ids, "logits": model(ids).logits.detach()}, folder.parent / "reference.pt")
    return folder


def _published(folder) -> set[str]:
    """The folder's files less the checkpoint and the nested model, which are not uploaded."""
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    return files - {"checkpoint-10/optimizer.pt", "merged/config.json"}


# --------------------------------------------------------------------------------------------
# The server: the write half of the Hub protocol, as `huggingface_hub` speaks it
# --------------------------------------------------------------------------------------------


def test_create_commit_regular_and_lfs_download_and_branches(online, tmp_path):
    api = HfApi(token=WRITE)
    api.create_repo("alice/files")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("alice/files")  # exists: 409 unless exist_ok
    assert err.value.response.status_code == 409
    weights, text = os.urandom(3000), b"plain text\n"
    api.create_commit(
        "alice/files",
        [CommitOperationAdd("w.safetensors", weights), CommitOperationAdd("notes/a.txt", text)],
        commit_message="two files",
    )
    # *.safetensors went through LFS (batch + PUT of its sha256), the text file inline.
    assert any(r.startswith("POST /alice/files.git/info/lfs/objects/batch") for r in online.requests)
    assert sum(r.startswith("PUT /lfs-upload/") for r in online.requests) == 1
    tree = {f.path: f for f in api.list_repo_tree("alice/files", recursive=True) if hasattr(f, "size")}
    assert tree["w.safetensors"].lfs is not None and tree["notes/a.txt"].lfs is None
    cache = tmp_path / "cache"
    assert open(hf_hub_download("alice/files", "w.safetensors", cache_dir=cache), "rb").read() == weights
    assert open(hf_hub_download("alice/files", "notes/a.txt", cache_dir=cache), "rb").read() == text

    main_sha = online.commit_sha("model", "alice/files")
    api.create_branch("alice/files", branch="dev")
    api.create_branch("alice/files", branch="dev", exist_ok=True)
    api.upload_file(
        path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id="alice/files", revision="dev"
    )
    assert "dev.txt" in api.list_repo_files("alice/files", revision="dev")
    assert "dev.txt" not in api.list_repo_files("alice/files")
    assert online.commit_sha("model", "alice/files") == main_sha
    assert {b.name for b in api.list_repo_refs("alice/files").branches} == {"main", "dev"}
    assert [c.title for c in api.list_repo_commits("alice/files")] == ["two files", "initial commit"]


def test_missing_things_and_tokens_are_typed_errors(online, tmp_path):
    api = HfApi(token=WRITE)
    api.create_repo("alice/secret", private=True)
    cache = tmp_path / "cache"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/secret", "nope.bin", cache_dir=cache, token=WRITE)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/no-such-repo")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("alice/secret", revision="no-such-branch")
    # A private repo is invisible without its owner's token.
    assert api.model_info("alice/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("alice/secret")
    # Unknown token: 401 with the Hub's message; read-only token or another namespace: 403.
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("alice/x")
    assert err.value.response.status_code == 401 and "Invalid credentials" in str(err.value)
    for token in (READ_ONLY, OTHER):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(token=token).create_repo("alice/x")
        assert err.value.response.status_code == 403
    assert ("model", "alice/x") not in online.repos


def test_push_is_one_commit_of_the_folder_with_the_card(online, model_folder):
    info = push_model_folder(model_folder, "alice/tiny", token=WRITE, commit_message="first")
    history = online.history("model", "alice/tiny")
    assert [c.message for c in history] == ["first", "initial commit"] and history[0].sha == info.oid
    files = online.files("model", "alice/tiny")
    assert set(files) == _published(model_folder) | {".gitattributes"}
    assert {"modeling_scratchgpt.py", "configuration_scratchgpt.py", "tokenization_scratchgpt.py"} <= set(
        files
    )
    assert files["model.safetensors"] == (model_folder / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert REPO_PLACEHOLDER not in card and 'from_pretrained("alice/tiny"' in card
    assert ModelCard(card).data.eval_results[0].metric_value == 40.0

    # A branch is created from main when missing; main stays where it was.
    branch = push_model_folder(model_folder, "alice/tiny", token=WRITE, revision="v2", exclude=["*.png"])
    assert online.commit_sha("model", "alice/tiny", "v2") == branch.oid
    assert online.commit_sha("model", "alice/tiny") == info.oid

    push_model_folder(model_folder, "alice/tiny-private", token=WRITE, private=True)
    assert online.repos[("model", "alice/tiny-private")].private


def test_failed_commit_or_upload_leaves_the_repo_at_its_last_commit(online, model_folder, tmp_path):
    push_model_folder(model_folder, "alice/atomic", token=WRITE)
    before = online.history("model", "alice/atomic")
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in model_folder.iterdir():
        if path.is_file():
            (changed / path.name).write_bytes(path.read_bytes())
    for kind, status in (("commit", 422), ("lfs_upload", 400)):  # 5xx would be retried
        (changed / "model.safetensors").write_bytes(os.urandom(1000))  # new weights: a new LFS upload
        online.fail_next(kind, status)
        with pytest.raises(HfHubHTTPError) as err:
            push_model_folder(changed, "alice/atomic", token=WRITE)
        assert err.value.response.status_code == status
        assert online.history("model", "alice/atomic") == before  # main still resolves to the old files
    push_model_folder(changed, "alice/atomic", token=WRITE)
    assert (
        online.files("model", "alice/atomic")["model.safetensors"]
        == (changed / "model.safetensors").read_bytes()
    )


def test_cli_explains_a_bad_token_and_a_bad_folder(online, model_folder, tmp_path, capsys):
    def push(*argv: str) -> int:
        parser = argparse.ArgumentParser()
        hub_cli.add_arguments(parser)
        return hub_cli.run(parser.parse_args(list(argv)))

    assert push(str(model_folder), "alice/cli", "--token", "hf_wrong") == 1
    assert "did not accept the token" in capsys.readouterr().err
    assert push(str(model_folder), "alice/cli", "--token", READ_ONLY) == 1
    assert "'write' role" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert push(str(tmp_path), "alice/cli", "--token", WRITE) == 2
    assert "no weights" in capsys.readouterr().err
    assert ("model", "alice/cli") not in online.repos
    with pytest.raises(PublishError, match="configuration_scratchgpt.py, which is not in"):
        broken = tmp_path / "no_code"
        broken.mkdir()
        for name in ("config.json", "model.safetensors"):
            (broken / name).write_bytes((model_folder / name).read_bytes())
        push_model_folder(broken, "alice/cli", token=WRITE)


# --------------------------------------------------------------------------------------------
# Round trips through fresh processes: push -> pull gives identical logits
# --------------------------------------------------------------------------------------------

PULL_WITH_PACKAGE = """
import torch, hf_scratchgpt
from hf_scratchgpt.cli import main
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import AutoPeftModelForCausalLM
rc = main(["push", {folder!r}, "alice/roundtrip"])  # token from HF_TOKEN, endpoint from HF_ENDPOINT
ref = torch.load({reference!r})
model = AutoModelForCausalLM.from_pretrained("alice/roundtrip").eval()
tokenizer = AutoTokenizer.from_pretrained("alice/roundtrip")
# transformers' own push_to_hub works for our classes too
model.push_to_hub("alice/via-transformers"); tokenizer.push_to_hub("alice/via-transformers")
again = AutoModelForCausalLM.from_pretrained("alice/via-transformers").eval()
adapter = AutoPeftModelForCausalLM.from_pretrained("alice/adapter").eval()
with torch.no_grad():
    result = {{
        "rc": rc,
        "class": type(model).__name__,
        "ids_equal": tokenizer("Once upon a time 🤗")["input_ids"] == ref["ids"][0].tolist(),
        "diff": (model(ref["ids"]).logits - ref["logits"]).abs().max().item(),
        "diff_transformers_push": (again(ref["ids"]).logits - ref["logits"]).abs().max().item(),
        "adapter_diff": (adapter(ref["ids"]).logits - ref["adapter_logits"]).abs().max().item(),
        "adapter_base": adapter.peft_config["default"].base_model_name_or_path,
    }}
"""

PULL_WITHOUT_PACKAGE = """
import sys
sys.modules["hf_scratchgpt"] = None  # unimportable, as on a machine without the package
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
ref = torch.load({reference!r})
kwargs = dict(trust_remote_code=True, revision={revision!r})
model = AutoModelForCausalLM.from_pretrained("alice/roundtrip", **kwargs).eval()
tokenizer = AutoTokenizer.from_pretrained("alice/roundtrip", **kwargs)
with torch.no_grad():
    result = {{
        "class": type(model).__module__ + "." + type(model).__name__,
        "ids_equal": tokenizer("Once upon a time 🤗")["input_ids"] == ref["ids"][0].tolist(),
        "diff": (model(ref["ids"]).logits - ref["logits"]).abs().max().item(),
    }}
"""


def _adapter_folder(base_dir, tmp_path):
    """A LoRA adapter on the saved base model, with non-zero B so it changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    return adapter_dir, peft_model.eval()


def test_push_then_pull_with_and_without_the_package_gives_identical_logits(online, model_folder, tmp_path):
    reference = torch.load(model_folder.parent / "reference.pt")
    adapter_dir, peft_model = _adapter_folder(model_folder, tmp_path)
    with torch.no_grad():
        reference["adapter_logits"] = peft_model(reference["ids"]).logits
    torch.save(reference, tmp_path / "reference.pt")
    with pytest.raises(PublishError, match="--base_model"):  # PEFT saved an absolute local path
        push_model_folder(adapter_dir, "alice/adapter", token=WRITE)
    push_model_folder(model_folder, "alice/base", token=WRITE)
    push_model_folder(adapter_dir, "alice/adapter", token=WRITE, base_model="alice/base")
    assert (
        json.loads(online.files("model", "alice/adapter")["adapter_config.json"])["base_model_name_or_path"]
        == "alice/base"
    )
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        model_folder
    )  # the local folder is left as it was
    adapter_card = ModelCard(online.files("model", "alice/adapter")["README.md"].decode())
    assert adapter_card.data.base_model == "alice/base" and adapter_card.data.library_name == "peft"

    code = PULL_WITH_PACKAGE.format(folder=str(model_folder), reference=str(tmp_path / "reference.pt"))
    result = run_client(online.url, code, tmp_path / "with", timeout=180, HF_TOKEN=WRITE)
    assert result["rc"] == 0 and result["class"] == "ScratchGPTForCausalLM" and result["ids_equal"]
    assert result["diff"] == 0.0 and result["diff_transformers_push"] == 0.0
    assert result["adapter_diff"] == 0.0 and result["adapter_base"] == "alice/base"
    pushed = online.history("model", "alice/roundtrip")
    assert len(pushed) == 2  # "initial commit" + exactly one commit with everything

    code = PULL_WITHOUT_PACKAGE.format(reference=str(tmp_path / "reference.pt"), revision=pushed[0].sha)
    result = run_client(online.url, code, tmp_path / "without", timeout=180)
    assert result["class"].startswith("transformers_modules.") and result["class"].endswith(
        "ScratchGPTForCausalLM"
    )
    assert result["ids_equal"] and result["diff"] == 0.0


def test_client_killed_before_its_commit_leaves_the_repo_at_its_last_commit(online, model_folder, tmp_path):
    push_model_folder(model_folder, "alice/killed", token=WRITE)
    before = online.history("model", "alice/killed")
    # The client: huggingface_hub's own upload (what push_model_folder runs), without torch to import.
    client_code = (
        "import sys; from huggingface_hub import HfApi, CommitOperationAdd\n"
        "HfApi().create_commit('alice/killed', [CommitOperationAdd('model.safetensors', sys.argv[1].encode() * 500)],"
        " commit_message='never lands')\n"
    )
    env = client_env(online.url, tmp_path, HF_TOKEN=WRITE)
    online.lfs_upload_started.clear()
    online.lfs_gate.clear()  # hold the LFS upload: the client dies between its upload and its commit
    log = tmp_path / "client.log"
    with open(log, "w") as output:
        client = subprocess.Popen(
            [sys.executable, "-c", client_code, "new weights"],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        while not online.lfs_upload_started.wait(timeout=0.5):
            assert client.poll() is None, (
                f"the client ended before its LFS upload:\n{log.read_text()[-3000:]}"
            )
        client.kill()
        client.wait(timeout=30)
    finally:
        online.lfs_gate.set()
    assert online.history("model", "alice/killed") == before
    assert (
        online.files("model", "alice/killed")["model.safetensors"]
        == (model_folder / "model.safetensors").read_bytes()
    )
