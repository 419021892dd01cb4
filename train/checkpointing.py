"""Atomic training checkpoints: model (safetensors via save_pretrained), processor, optimizer,
scheduler, per-rank RNG state and the loop's position, so that a resumed run repeats the
uninterrupted one exactly.

A checkpoint is written into a hidden temporary folder, fsynced, then renamed into place: a run
killed mid-write leaves the previous checkpoints intact. `checkpoint-last` is a symlink to the
newest complete checkpoint, swapped atomically with os.replace.
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from train.user_errors import MissingPathError, UserError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
LAST_POINTER = "checkpoint-last"
BEST_FOLDER = "checkpoint-best"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"
SCHEDULER_STATE = "scheduler.pt"


def rng_state_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def capture_rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(root: Path):
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(directory) / name)
        _fsync_dir(Path(directory))


def _replace_folder(tmp: Path, final: Path):
    """Move a complete `tmp` folder to `final`, replacing any older folder of that name."""
    _fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def point_to(output_dir: Path, pointer_name: str, target_name: str):
    """Atomically make `output_dir/pointer_name` a relative symlink to `target_name`."""
    link = output_dir / pointer_name
    tmp_link = output_dir / f".{pointer_name}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(target_name, tmp_link)
    os.replace(tmp_link, link)
    _fsync_dir(output_dir)


def step_checkpoints(output_dir: Path) -> list:
    """Complete step checkpoints in `output_dir`, oldest first."""
    found = []
    for path in Path(output_dir).iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and not path.is_symlink() and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(output_dir: Path, keep: int):
    checkpoints = step_checkpoints(output_dir)
    for path in checkpoints[: max(0, len(checkpoints) - max(1, keep))]:
        shutil.rmtree(path)


def save_checkpoint(accelerator, output_dir, step: int, write_main_files, keep: int) -> Path:
    """Write `checkpoint-<step>` atomically from all ranks.

    `write_main_files(folder)` writes the model, processor, optimizer, scheduler and trainer state
    (main process); every rank adds its own RNG state.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng_path = tmp / rng_state_file(accelerator.process_index)
    torch.save(capture_rng_state(), rng_path)
    _fsync_file(rng_path)
    if accelerator.is_main_process:
        write_main_files(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _replace_folder(tmp, final)
        point_to(output_dir, LAST_POINTER, final.name)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def save_best(accelerator, output_dir, write_model_files, metric_record: dict) -> Path:
    """Replace `checkpoint-best` (model + processor + the metric that made it best) atomically."""
    output_dir = Path(output_dir)
    final = output_dir / BEST_FOLDER
    if accelerator.is_main_process:
        tmp = output_dir / f".{BEST_FOLDER}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_model_files(tmp)
        (tmp / "best_metric.json").write_text(json.dumps(metric_record, indent=2))
        _replace_folder(tmp, final)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(path) -> Path:
    """Follow `checkpoint-last` (or any path) to a complete checkpoint folder, or raise naming it."""
    given = Path(path)
    resolved = given.resolve()
    if not resolved.is_dir():
        raise MissingPathError(f"--resume_from {given}: no such checkpoint folder (give a checkpoint-<step> folder "
                               "or checkpoint-last)")
    missing = [name for name in (TRAINER_STATE, OPTIMIZER_STATE, SCHEDULER_STATE) if not (resolved / name).is_file()]
    if missing:
        raise UserError(f"--resume_from {given}: not a complete training checkpoint (missing {missing}; give a "
                        "checkpoint-<step> folder)")
    return resolved


def resolve_resume(value, output_dir):
    """`--resume_from`: a checkpoint folder, `latest` (the newest complete `checkpoint-<step>` in the run folder; a
    half-written one is a hidden .tmp folder and never counts) or `auto` (the same, or None to start fresh)."""
    if value not in ("latest", "auto"):
        return resolve_checkpoint(value)
    found = step_checkpoints(output_dir) if Path(output_dir).is_dir() else []
    if found:
        return resolve_checkpoint(found[-1])
    if value == "auto":
        return None
    raise UserError(f"--resume_from latest: no complete checkpoint in {output_dir} (use --resume_from auto to start "
                    "fresh when there is none)")


def load_trainer_state(checkpoint: Path) -> dict:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text())


def load_rng_state(checkpoint: Path, rank: int):
    """This rank's saved RNG state, or None when the checkpoint was written by fewer processes."""
    path = Path(checkpoint) / rng_state_file(rank)
    if not path.is_file():
        return None
    return torch.load(path, weights_only=False)


__all__ = [
    "LAST_POINTER",
    "BEST_FOLDER",
    "TRAINER_STATE",
    "OPTIMIZER_STATE",
    "SCHEDULER_STATE",
    "capture_rng_state",
    "restore_rng_state",
    "point_to",
    "step_checkpoints",
    "prune_checkpoints",
    "save_checkpoint",
    "save_best",
    "resolve_checkpoint",
    "resolve_resume",
    "load_trainer_state",
    "load_rng_state",
]
