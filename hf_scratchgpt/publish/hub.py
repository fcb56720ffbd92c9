"""Publishing a model folder to the Hugging Face Hub in one commit: ``scratchgpt push MODEL_DIR REPO_ID``.

    scratchgpt push outputs/speedrun/model you/scratchgpt-tiny              # token from HF_TOKEN or login
    scratchgpt push RUN/sft you/scratchgpt-sft --base_model you/scratchgpt-tiny --revision v1 --private

Everything the folder holds (weights, tokenizer, the ``*_scratchgpt.py`` code files that
``save_pretrained`` writes, adapters, images) goes up in ONE commit, so the repo never shows a
half-uploaded model: large files are uploaded first (LFS), and the branch moves only when the
commit lands. The README.md is the folder's card (`hf_scratchgpt.publish.cards`), or one rendered from the
folder's ``metrics.json``/``results.json`` when there is none; its placeholder repo id is replaced
by the real one. Sub-folders that hold a model of their own (an SFT stage's ``merged/`` next to its
adapter) are left out: each model is its own repo. An adapter's ``base_model_name_or_path`` (PEFT
saves a local path) is replaced by the Hub id of its base model in what is uploaded; the local folder
is never changed.

The endpoint comes from ``HF_ENDPOINT`` (default https://huggingface.co); ``--revision`` names a
branch, created from main when missing. From Python: `push_model_folder`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from ..train.stage_files import METRICS_FILE
from .cards import REPO_PLACEHOLDER, build_model_card, fill_repo_id

logger = logging.getLogger(__name__)

# Training leftovers that are not part of a published model (checkpoints hold optimizer state).
DEFAULT_EXCLUDE = ("checkpoint-*", "runs/*", ".cache/*", "*__pycache__*", "*.pyc", ".git/*", "*.lock")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
BLANK_TEMPLATE_MARK = "[More Information Needed]"


class PublishError(ValueError):
    """The folder cannot be published as it is; the message says what is missing and how to fix it."""


def check_model_folder(folder: str | Path, base_model: str | None = None) -> str:
    """``"model"`` or ``"adapter"`` for a folder that loads from the Hub once uploaded, else `PublishError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: pass the output_dir of a training stage.")
    if (folder / "adapter_config.json").is_file():
        if not any((folder / name).is_file() for name in ADAPTER_WEIGHT_FILES):
            raise PublishError(f"{folder} has adapter_config.json but no {' / '.join(ADAPTER_WEIGHT_FILES)}.")
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base_model is None and base and (Path(base).is_absolute() or Path(base).exists()):
            raise PublishError(
                f"{folder}/adapter_config.json names the local base model {base!r}, which nobody else can "
                "load: push the base model too and pass its Hub id with --base_model OWNER/NAME."
            )
        return "adapter"
    if not (folder / "config.json").is_file():
        raise PublishError(
            f"{folder} has no config.json (nor adapter_config.json): save the model with save_pretrained."
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise PublishError(f"{folder} has config.json but no weights ({' / '.join(WEIGHT_FILES)}).")
    for name in ("config.json", "tokenizer_config.json"):
        auto_map = (
            json.loads((folder / name).read_text()).get("auto_map") if (folder / name).is_file() else None
        )
        for reference in (auto_map or {}).values():
            for target in reference if isinstance(reference, list) else [reference]:
                if target and "--" not in target:  # "module.Class"; "repo--module.Class" lives elsewhere
                    module = target.rsplit(".", 1)[0] + ".py"
                    if not (folder / module).is_file():
                        raise PublishError(
                            f"{name} maps a class to {module}, which is not in {folder}: without it the model "
                            "cannot load with trust_remote_code. Save with save_pretrained after "
                            "`import hf_scratchgpt`."
                        )
    return "model"


def _card_text(folder: Path, repo_id: str, base_model: str | None) -> str:
    """The README.md to upload: the folder's card (or a new one), naming the repo and the base model.

    A README still holding the Hub's blank template (PEFT writes one next to every adapter) is replaced.
    """
    readme = folder / "README.md"
    if readme.is_file() and BLANK_TEMPLATE_MARK not in readme.read_text(encoding="utf-8"):
        card = ModelCard.load(readme)
    else:
        metrics, results = folder / METRICS_FILE, folder / "results.json"
        card = build_model_card(
            folder,
            metrics=metrics if metrics.is_file() else None,
            eval_results=results if results.is_file() else None,
            base_model=base_model,
            repo_id=repo_id,
        )
    if base_model:
        card.data.base_model = base_model
    if REPO_PLACEHOLDER in card.content and getattr(card.data, "eval_results", None):
        card.data.model_name = repo_id.split("/")[-1]  # the model-index names the repo, not the local folder
    return fill_repo_id(str(card), repo_id)


def _nested_models(folder: Path) -> list[str]:
    """Sub-folders holding a model or adapter of their own (an SFT stage's ``merged/`` and ``base/``)."""
    configs = [*folder.glob("*/**/config.json"), *folder.glob("*/**/adapter_config.json")]
    return sorted({path.parent.relative_to(folder).as_posix() for path in configs})


def _operations(folder: Path, repo_id: str, kind: str, base_model: str | None, exclude: list[str]) -> list:
    nested = [name for name in _nested_models(folder) if not any(fnmatch(name, p) for p in DEFAULT_EXCLUDE)]
    for name in nested:
        logger.warning("Leaving out %s/: it is a model of its own; push it to its own repo.", name)
    exclude = [*exclude, *(f"{name}/*" for name in nested)]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    operations = [
        CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path))
        for path in filter_repo_objects(files, ignore_patterns=[*DEFAULT_EXCLUDE, *exclude])
        if path not in ("README.md", "adapter_config.json")
    ]
    operations.append(
        CommitOperationAdd("README.md", _card_text(folder, repo_id, base_model).encode("utf-8"))
    )
    if kind == "adapter":
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        if base_model:
            adapter_config["base_model_name_or_path"] = base_model
        operations.append(
            CommitOperationAdd("adapter_config.json", (json.dumps(adapter_config, indent=2) + "\n").encode())
        )
    return operations


def push_model_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    base_model: str | None = None,
    commit_message: str | None = None,
    exclude: list[str] | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Upload ``folder`` to the model repo ``repo_id`` (created if missing) in one commit.

    ``token``: a write token (default: ``HF_TOKEN`` or the stored login); ``private`` applies when
    the repo is created; ``revision``: the branch to commit to, created from main when missing;
    ``base_model``: the Hub id of an adapter's base model; ``exclude``: more glob patterns to skip.
    The Hub's refusals (bad token, failed upload or commit) raise `HfHubHTTPError`; the repo then
    still holds its previous commit.
    """
    folder = Path(folder)
    kind = check_model_folder(folder, base_model)
    api = HfApi(endpoint=endpoint, token=token)
    operations = _operations(folder, repo_id, kind, base_model, list(exclude or []))
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    try:
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {kind} from {folder.name} with hf_scratchgpt",
            revision=revision,
        )
    except RuntimeError as err:
        # A failed LFS upload arrives wrapped ("Error while uploading ..."): raise the Hub's own answer.
        if isinstance(err.__cause__, HfHubHTTPError):
            raise err.__cause__ from err
        raise


# --------------------------------------------------------------------------------------------
# `scratchgpt push`
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="A folder written by save_pretrained (model or PEFT adapter).")
    parser.add_argument("repo_id", help="The model repo to push to, e.g. your-username/scratchgpt-tiny.")
    parser.add_argument("--private", action="store_true", help="Create the repo private (when it is new).")
    parser.add_argument(
        "--revision", default=None, help="Branch to commit to (created from main if missing)."
    )
    parser.add_argument(
        "--token", default=None, help="A write token (default: $HF_TOKEN, then the stored login)."
    )
    parser.add_argument("--base_model", default=None, help="Hub id of an adapter's base model.")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument(
        "--exclude", nargs="*", default=[], metavar="PATTERN", help="More files to leave out."
    )


def _explain(err: HfHubHTTPError, endpoint: str) -> str:
    status = err.response.status_code if err.response is not None else None
    if status == 401:
        return (
            f"The Hub at {endpoint} did not accept the token ({err.server_message or '401 Unauthorized'}). "
            "Pass a valid token with --token or set HF_TOKEN (a 'write' token from "
            "https://huggingface.co/settings/tokens), or run `hf auth login`."
        )
    if status == 403:
        return (
            f"The Hub at {endpoint} refused the write ({err.server_message or '403 Forbidden'}). The token "
            "needs the 'write' role and the repo must be in your namespace (or an organization you can "
            "write to)."
        )
    return f"The Hub at {endpoint} answered with an error: {err}"


def run(args: argparse.Namespace) -> int:
    api = HfApi()
    try:
        info = push_model_folder(
            args.model_dir,
            args.repo_id,
            token=args.token or os.environ.get("HF_TOKEN"),
            private=args.private or None,
            revision=args.revision,
            base_model=args.base_model,
            commit_message=args.commit_message,
            exclude=args.exclude,
        )
    except PublishError as err:
        print(f"scratchgpt push: {err}", file=sys.stderr)
        return 2
    except HfHubHTTPError as err:
        print(f"scratchgpt push: {_explain(err, api.endpoint)}", file=sys.stderr)
        return 1
    print(f"Pushed {args.model_dir} to {args.repo_id} in commit {info.oid}: {info.commit_url}")
    print(f'Load exactly this version: from_pretrained("{args.repo_id}", revision="{info.oid}")')
    return 0


__all__ = [
    "DEFAULT_EXCLUDE",
    "PublishError",
    "add_arguments",
    "check_model_folder",
    "push_model_folder",
    "run",
]
