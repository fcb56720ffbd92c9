"""Saving and resuming without losing work: atomic model folders, complete checkpoints, full disks.

What ``Trainer`` leaves to chance, and what this module does instead:

* **A model folder is replaced as a whole** (``atomic_model_save``). The new model is written to a
  hidden staging folder *inside* ``output_dir`` (``.incoming-model/``: the same filesystem, so every
  move is a rename, and it works when ``output_dir`` is a mount point or the working directory),
  fsynced and marked complete; only then are its files moved over the previous model's. A failure
  while writing (killed, full disk, any exception) leaves the previous model untouched. The move
  itself takes ``config.json`` away first and puts the new one back last, so a kill in that short
  window leaves a folder that refuses to load (no ``config.json``) rather than one that silently mixes
  new weights with an old ``tokenizer.json``; ``finish_interrupted_save`` (run at the next
  ``train()``, save or resume) completes the move from the staged copy. Everything else in
  ``output_dir`` (``checkpoint-*``, ``trainer_state.json``, ``runs/``, ``metrics.json``, samples) is
  never touched: only the files a model save writes are replaced, and stale ones (an old shard, an
  old ``vocab.json``) are removed so the folder holds exactly one model. The price: while saving, the
  disk holds the previous model and the new one side by side.
* **Resuming picks a complete checkpoint** (``resolve_resume_checkpoint``): ``latest``/``true`` mean
  the newest ``checkpoint-N`` that has a readable ``trainer_state.json`` (the Trainer writes it last)
  and whole weights; half-written ones (a kill during a checkpoint) are skipped with a warning.
* **A run does not clobber another run** (``ensure_output_dir_is_free``): checkpoints or a saved
  model already in ``output_dir`` stop a fresh run, unless it resumes or ``--overwrite_output_dir``.
* **A full disk is named** (``DiskFullError``): "no space left on <path>", instead of torch's
  ``enforce fail at inline_container.cc ... unexpected pos``.
* **A damaged model folder is named** (``model_folder_problem``, ``DamagedModelError``): a cut-off
  ``model.safetensors`` or a ``config.json`` that is not JSON, instead of safetensors' "incomplete metadata".
* **Resuming a tied head is quiet**: Trainer's "missing keys ... ['lm_head.weight']" for a head that is
  the embedding (saved once, so absent from the file by design) is dropped; a head really missing is not.
"""

from __future__ import annotations

import ast
import errno
import fnmatch
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

STAGING_DIR_NAME = ".incoming-model"
_COMPLETE_MARKER = ".complete"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
TRAINER_STATE_NAME = "trainer_state.json"
# The files a model / tokenizer / processor save writes at the top of its folder. Only these are
# replaced or removed when a new model is moved in; anything else in the folder is the run's own.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model*.bin.index.json",
    "adapter_config.json",
    "training_args.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "configuration_*.py",
    "modeling_*.py",
    "tokenization_*.py",
)
# Weight files a resumable checkpoint holds (one of them): single file, sharded index, adapter,
# or the folders FSDP and DeepSpeed write.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_WEIGHT_FOLDER_PATTERNS = ("pytorch_model_fsdp_*", "global_step*")
_RESUME_LATEST = {"latest", "true", "last", "yes"}
_RESUME_NONE = {"", "false", "no", "none"}
_DISK_FULL_SIGNS = ("no space left on device", "os error 28", "unexpected pos", "file write failed")


class DiskFullError(OSError):
    """The disk filled up while saving; the message names the folder and what is still usable."""

    def __init__(self, message: str, path: str | os.PathLike):
        super().__init__(errno.ENOSPC, message, str(path))
        self.message = message

    def __str__(self) -> str:  # OSError's own would prefix "[Errno 28]" and append the path again
        return self.message


class DamagedModelError(OSError):
    """A model folder has a file that cannot be read (cut off, not JSON); the message names it and the fix."""


class CheckpointError(ValueError):
    """``--resume_from_checkpoint`` names something that cannot be resumed from."""


class OutputDirNotEmptyError(ValueError):
    """``output_dir`` holds another run's checkpoints or model, and this run would overwrite them."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is the disk filling up.

    ``OSError`` ENOSPC from Python writes; torch's zip writer reports the same as a ``RuntimeError``
    "[enforce fail at inline_container.cc] ... unexpected pos"; safetensors as "No space left on device
    (os error 28)".
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if any(sign in str(error).lower() for sign in _DISK_FULL_SIGNS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _free_space(path: Path) -> str:
    """Free space on the device holding ``path`` (or its nearest existing parent), for messages."""
    for folder in (path, *path.parents):
        if folder.exists():
            return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    return "free space unknown"


def disk_full_error(path: str | os.PathLike, what: str, still_usable: str) -> DiskFullError:
    """A ``DiskFullError`` saying where the disk filled up, while doing what, and what survived."""
    path = Path(path)
    return DiskFullError(
        f"no space left on {path} ({_free_space(path)}) while saving {what}. {still_usable} "
        "Free some space (or lower --save_total_limit), then resume with --resume_from_checkpoint latest.",
        path,
    )


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk. Folders cannot be fsynced on Windows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a folder on a platform/filesystem that does not support it
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder, name))
        _fsync(Path(folder))


def _is_model_file(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)


def _move_staged_model_in(staging: Path, output_dir: Path) -> None:
    """Replace the model files in ``output_dir`` by those in the (complete) ``staging`` folder.

    ``config.json`` goes first and comes back last: in between, the folder does not load at all,
    which is loud, instead of loading a mix of two models, which is silent.
    """
    incoming = sorted(p.name for p in staging.iterdir() if p.name != _COMPLETE_MARKER)
    stale = [
        p for p in output_dir.iterdir() if p.is_file() and _is_model_file(p.name) and p.name not in incoming
    ]
    (output_dir / "config.json").unlink(missing_ok=True)
    for path in stale:
        path.unlink()
    for name in sorted(incoming, key=lambda name: name == "config.json"):
        target = output_dir / name
        if target.is_dir():  # os.replace cannot replace a non-empty folder
            shutil.rmtree(target)
        os.replace(staging / name, target)
    _fsync(output_dir)
    shutil.rmtree(staging)


def finish_interrupted_save(output_dir: str | os.PathLike) -> bool:
    """Complete a model save that was killed while its files were being moved in; drop an unfinished one.

    A staged model marked complete is moved in (the kill happened during the move); a staged model
    without the mark was still being written, so it is discarded and the previous model stays.
    Returns whether a staged model was moved in.
    """
    output_dir = Path(output_dir)
    staging = output_dir / STAGING_DIR_NAME
    if not staging.is_dir():
        return False
    if (staging / _COMPLETE_MARKER).exists():
        logger.warning("Finishing an interrupted model save in %s (the new model was complete).", output_dir)
        _move_staged_model_in(staging, output_dir)
        return True
    shutil.rmtree(staging, ignore_errors=True)
    return False


@contextmanager
def atomic_model_save(output_dir: str | os.PathLike) -> Iterator[str]:
    """Yield a folder to write a whole model into; on success it replaces the model in ``output_dir``.

    Usage::

        with atomic_model_save(output_dir) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)

    If the body raises, ``output_dir`` keeps its previous model, byte for byte, and the staging folder
    is removed; a full disk becomes a ``DiskFullError`` naming ``output_dir``.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    finish_interrupted_save(output_dir)
    staging = output_dir / STAGING_DIR_NAME
    staging.mkdir()
    try:
        yield str(staging)
        _fsync_tree(staging)
        (staging / _COMPLETE_MARKER).touch()
        _fsync(staging)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, Exception) and is_disk_full(error) and not isinstance(error, DiskFullError):
            raise disk_full_error(
                output_dir, "the model", f"The previous model in {output_dir} (if any) is unchanged."
            ) from error
        raise
    _move_staged_model_in(staging, output_dir)


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (missing or unreadable state, no whole weights), or None."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return "no such folder"
    finish_interrupted_save(checkpoint)
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE_NAME} (the Trainer writes it last: the save did not finish)"
    except (OSError, ValueError):
        return f"{TRAINER_STATE_NAME} is not readable JSON (cut off mid-write)"
    if not _has_weights(checkpoint):
        return f"no model weights ({' or '.join(_WEIGHT_FILES[:2])})"
    return _weights_problem(checkpoint)


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (*_WEIGHT_INDEXES, *_WEIGHT_FILES)) or any(
        any(folder.glob(pattern)) for pattern in _WEIGHT_FOLDER_PATTERNS
    )


def _weights_problem(folder: Path) -> str | None:
    """Why the weights in ``folder`` cannot be loaded (an unreadable index, a missing or cut-off shard, a
    cut-off single file), or None (also when it holds no weights)."""
    for name in _WEIGHT_INDEXES:
        if (folder / name).is_file():
            try:
                shards = sorted(set(json.loads((folder / name).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError):
                return f"{name} is not a readable weight index"
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                return f"weight shards missing: {', '.join(missing)}"
            return next(filter(None, (_unreadable_weights(folder / shard) for shard in shards)), None)
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return _unreadable_weights(folder / name)
    return None


def _unreadable_weights(path: Path) -> str | None:
    """A truncated safetensors file fails to open (its header promises more bytes than there are)."""
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt"):
                pass
        except Exception as error:  # safetensors raises its own error type for a cut-off file
            return f"{path.name} is not readable ({error})"
    return None


def looks_like_model_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds what ``save_pretrained`` writes (a config, weights or a tokenizer)."""
    folder = Path(folder)
    return folder.is_dir() and any(
        (folder / name).is_file() for name in ("config.json", "adapter_config.json", "tokenizer_config.json")
    )


def model_folder_problem(folder: str | os.PathLike) -> str | None:
    """What makes a saved model (or tokenizer) folder unloadable, or None: a model file that is not readable
    JSON (``config.json``, ``tokenizer.json``, ...), missing or cut-off weights. Reads the JSON files and the
    weights' headers only, so it is cheap enough to run when a load has failed."""
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        if _is_model_file(path.name):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
                return f"{path.name} is not valid JSON ({error})"
    return _weights_problem(folder)


def damaged_model_error(folder: str | os.PathLike, problem: str) -> DamagedModelError:
    return DamagedModelError(
        f"{folder} is damaged: {problem}. Re-download it (a Hub model: from_pretrained(..., "
        "force_download=True), or delete its copy in the Hugging Face cache), or save it again with "
        "save_pretrained."
    )


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N`` folders in ``output_dir``, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()
    ]
    return [path for _, path in sorted(found)]


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``output_dir`` that can be resumed from; incomplete ones are warned about."""
    for checkpoint in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        logger.warning("Skipping incomplete checkpoint %s: %s.", checkpoint, problem)
    return None


def resume_requested(value: str | bool | None) -> bool:
    """Whether a ``--resume_from_checkpoint`` value asks to resume at all."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    return str(value).strip().lower() not in _RESUME_NONE


def resumes_latest(value: str | bool | None) -> bool:
    """Whether a ``--resume_from_checkpoint`` value asks for the newest complete checkpoint."""
    return value is True or (isinstance(value, str) and value.strip().lower() in _RESUME_LATEST)


# Trainer._issue_warnings_after_load logs this (transformers' own text) after load_state_dict(strict=False).
_MISSING_KEYS_WARNING = "There were missing keys in the checkpoint model loaded: "
_TIED_HEAD_KEY = "lm_head.weight"  # the output embedding, which tie_word_embeddings makes the input one


class _TiedHeadIsNotMissing(logging.Filter):
    """Drops Trainer's "There were missing keys in the checkpoint model loaded: ['lm_head.weight']" when the
    checkpoint being resumed was saved from a model with a tied head.

    ``save_pretrained`` stores a tied head once, as the input embedding, so ``lm_head.weight`` is absent from
    the file by design; ``load_state_dict`` then lists it as missing although loading the embedding loaded
    the head. The warning is transformers' own log, so it is filtered here (``resolve_resume_checkpoint``
    tells the filter about each checkpoint it picks); any other missing key, or a head missing from a
    checkpoint of an untied model, is still reported.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tied_head = False  # whether the checkpoint picked last was saved with tie_word_embeddings

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not (self.tied_head and message.startswith(_MISSING_KEYS_WARNING)):
            return True
        try:
            missing = ast.literal_eval(message.removeprefix(_MISSING_KEYS_WARNING).rstrip("."))
        except (ValueError, SyntaxError):
            return True
        return [str(key).removeprefix("module.") for key in missing] != [_TIED_HEAD_KEY]


_TIED_HEAD_FILTER = _TiedHeadIsNotMissing()
logging.getLogger("transformers.trainer").addFilter(_TIED_HEAD_FILTER)


def _saved_with_tied_head(checkpoint: str | os.PathLike) -> bool:
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("tie_word_embeddings", True))  # transformers' default for a config without it


def resolve_resume_checkpoint(output_dir: str | os.PathLike, value: str | bool | None) -> str | None:
    """The checkpoint to resume from, for a ``--resume_from_checkpoint`` value, or None for a fresh start.

    * ``None``, ``""``, ``"false"``: a fresh start.
    * ``"latest"`` or ``"true"`` (or ``True``): the newest *complete* ``checkpoint-N`` in ``output_dir``;
      incomplete ones (a kill during a checkpoint write) are skipped with a warning naming them. With no
      complete checkpoint at all the run starts fresh, with a warning that says so: a pipeline can pass
      ``latest`` on every run, first included.
    * a path: that checkpoint, which must be complete.

    Raises:
        CheckpointError: a path that does not exist or cannot be resumed from (the message says why).
    """
    if not resume_requested(value):
        return None
    if resumes_latest(value):
        checkpoint = latest_complete_checkpoint(output_dir)
        if checkpoint is None:
            logger.warning(
                "--resume_from_checkpoint %s: no complete checkpoint in %s; starting a fresh run.",
                value,
                output_dir,
            )
            return None
        logger.info("Resuming from %s.", checkpoint)
    else:
        problem = checkpoint_problem(value)
        if problem is not None:
            raise CheckpointError(
                f"--resume_from_checkpoint {value}: cannot resume from it: {problem}. Pass another "
                "checkpoint-N folder, or 'latest' for the newest complete checkpoint in --output_dir."
            )
        checkpoint = Path(value)
    _TIED_HEAD_FILTER.tied_head = _saved_with_tied_head(checkpoint)
    return str(checkpoint)


def _previous_work(output_dir: Path) -> list[str]:
    """What in ``output_dir`` a fresh run would delete or overwrite: checkpoints and a saved model."""
    found = [p.name for p in list_checkpoints(output_dir)]
    if (output_dir / "config.json").is_file():
        weights = sorted(p.name for p in output_dir.glob("*.safetensors")) or ["no weights"]
        found.append(
            f"a saved model (config.json, {', '.join(weights[:2])}{', ...' if len(weights) > 2 else ''})"
        )
    return found


def ensure_output_dir_is_free(
    output_dir: str | os.PathLike, overwrite: bool, is_main_process: bool = True
) -> None:
    """Stop a fresh run from destroying another run's checkpoints or model in ``output_dir``.

    With ``overwrite`` the old ``checkpoint-*`` folders are deleted (by the main process) so they can
    neither be rotated in with this run's nor picked up by a later ``--resume_from_checkpoint latest``.

    Raises:
        OutputDirNotEmptyError: naming the folder, what is in it, and the two ways on.
    """
    output_dir = Path(output_dir)
    found = _previous_work(output_dir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        raise OutputDirNotEmptyError(
            f"--output_dir {output_dir} already holds another run's work ({shown}); a fresh run would "
            "overwrite its model and delete its checkpoints (save_total_limit rotation). Pass "
            "--resume_from_checkpoint latest to continue that run, or --overwrite_output_dir true to replace "
            "it, or choose another --output_dir."
        )
    if is_main_process:
        for checkpoint in list_checkpoints(output_dir):
            logger.warning("--overwrite_output_dir: deleting the previous run's %s", checkpoint)
            shutil.rmtree(checkpoint)


__all__ = [
    "CheckpointError",
    "DamagedModelError",
    "DiskFullError",
    "MODEL_FILE_PATTERNS",
    "OutputDirNotEmptyError",
    "atomic_model_save",
    "checkpoint_problem",
    "damaged_model_error",
    "disk_full_error",
    "ensure_output_dir_is_free",
    "finish_interrupted_save",
    "is_disk_full",
    "latest_complete_checkpoint",
    "list_checkpoints",
    "looks_like_model_folder",
    "model_folder_problem",
    "resolve_resume_checkpoint",
    "resume_requested",
    "resumes_latest",
]
