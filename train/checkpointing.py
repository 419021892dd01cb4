"""Atomic training checkpoints: model (safetensors via save_pretrained), processor, optimizer,
scheduler, per-rank RNG state and the loop's position, so that a resumed run repeats the
uninterrupted one exactly.

A checkpoint is written into a hidden temporary folder, fsynced, then renamed into place: a run
killed mid-write leaves the previous checkpoints intact. `checkpoint-last` is a symlink to the
newest complete checkpoint, swapped atomically with os.replace. Each checkpoint lists its files and
their sizes (checkpoint_files.json), so that one cut short later (a partial copy, a full disk) is
recognised before a resume loads it.
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from train.data_loading import parse_data_spec
from train.logging_utils import get_logger
from train.user_errors import MissingPathError, UserError, is_main_rank

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
LAST_POINTER = "checkpoint-last"
BEST_FOLDER = "checkpoint-best"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"
SCHEDULER_STATE = "scheduler.pt"
MANIFEST = "checkpoint_files.json"
REQUIRED_FILES = (TRAINER_STATE, OPTIMIZER_STATE, SCHEDULER_STATE)
# How a model config was saved, not which model it describes.
SAVE_METADATA = {"architectures", "auto_map", "dtype", "torch_dtype", "transformers_version", "_name_or_path"}

logger = get_logger("medvl.checkpointing")


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


def _write_manifest(folder: Path):
    sizes = {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*")) if path.is_file()}
    (folder / MANIFEST).write_text(json.dumps(sizes, indent=1))


def checkpoint_problem(folder) -> str | None:
    """Why `folder` is not a complete training checkpoint (a file missing, or of another size than was written), or
    None. Checkpoints written before the manifest existed are checked for their required files only."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    if not (folder / MANIFEST).is_file():
        return None
    try:
        sizes = json.loads((folder / MANIFEST).read_text())
    except ValueError:
        return f"{MANIFEST} is unreadable"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size:,} bytes, {size:,} were written (truncated or damaged)"
    return None


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
        _write_manifest(tmp)  # last: every rank's files are in
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
    """Follow `checkpoint-last` (or any path) to a complete checkpoint folder, or raise naming what is wrong."""
    given = Path(path)
    resolved = given.resolve()
    if not resolved.is_dir():
        raise MissingPathError(f"--resume_from {given}: no such checkpoint folder (give a checkpoint-<step> folder "
                               "or checkpoint-last)")
    problem = checkpoint_problem(resolved)
    if problem:
        raise UserError(f"--resume_from {given}: not a complete training checkpoint ({problem}; give another "
                        "checkpoint-<step> folder, or --resume_from latest)")
    return resolved


def resolve_resume(value, output_dir):
    """`--resume_from`: a checkpoint folder, `latest` (the newest complete `checkpoint-<step>` in the run folder) or
    `auto` (the same, or None to start fresh when the folder has no checkpoint). A half-written checkpoint is a hidden
    .tmp folder and never counts; one damaged after it was written is skipped with a warning."""
    if value not in ("latest", "auto"):
        return resolve_checkpoint(value)
    skipped = []
    for folder in reversed(step_checkpoints(output_dir) if Path(output_dir).is_dir() else []):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder.resolve()
        skipped.append(f"{folder.name}: {problem}")
        if is_main_rank():
            logger.warning(f"--resume_from {value}: skipping {folder} ({problem})")
    if skipped:  # starting afresh would overwrite them: let the user decide
        raise UserError(f"--resume_from {value}: no complete checkpoint in {output_dir} ({'; '.join(skipped)}; delete "
                        "the damaged folders to start afresh, or give --resume_from a checkpoint folder)")
    if value == "auto":
        return None
    raise UserError(f"--resume_from latest: no complete checkpoint in {output_dir} (use --resume_from auto to start "
                    "fresh when there is none)")


def data_signature(specs) -> list:
    """`--data` as a resumed run must repeat it: options with their defaults filled in, local locations absolute."""
    signature = []
    for text in specs:
        spec = parse_data_spec(text)
        location = spec.location if "://" in spec.location or not spec.location else os.path.abspath(spec.location)
        options = [f"{key}={','.join(value) if isinstance(value, list) else value}"
                   for key, value in spec.options.items()]
        # The spec's own syntax: `kind:location?key=value&...`, or `synthcxr:n=...,size=...,seed=...`.
        signature.append(f"{spec.kind}:{location}?{'&'.join(options)}" if location and options
                         else f"{spec.kind}:{location or ','.join(options)}")
    return signature


def config_differences(saved: dict, expected: dict, prefix="") -> list:
    """`field: <checkpoint's> -> <this run's>` for each model config field that differs (sub-configs flattened)."""
    differences = []
    for key in sorted(set(saved) | set(expected), key=str):
        if key in SAVE_METADATA:
            continue
        old, new = saved.get(key), expected.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return differences


def readable_size(size) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def weights_bytes(model) -> int:
    """The size of the model's weights as saved (tied weights once)."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def estimated_checkpoint_bytes(model) -> int:
    """The weights plus AdamW's two moments per trainable weight (the optimizer state is empty before the first step
    and cannot be measured); the processor's and trainer's files are small."""
    return weights_bytes(model) + sum(2 * p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def disk_space_warning(output_dir, checkpoint_bytes: int, saves: int, keep: int, best_bytes: int = 0) -> str | None:
    """A warning with the numbers when the step checkpoints the run keeps (`keep` of `saves`, plus the one being
    written before the oldest is deleted) and checkpoint-best (`best_bytes`) would not fit on the output disk, counting
    the space the folder's present checkpoints hold (they are replaced); else None."""
    output_dir = Path(output_dir)
    at_once = min(saves, keep + 1)
    needed = at_once * checkpoint_bytes + best_bytes
    held = sum(_folder_bytes(path) for path in step_checkpoints(output_dir))
    if (output_dir / BEST_FOLDER).is_dir():
        held += _folder_bytes(output_dir / BEST_FOLDER)
    free = shutil.disk_usage(output_dir).free
    if needed <= free + held:
        return None
    best = f" and checkpoint-best ({readable_size(best_bytes)})" if best_bytes else ""
    return (f"checkpoints may not fit on the disk of {output_dir}: {at_once} step checkpoints of about "
            f"{readable_size(checkpoint_bytes)} (--save_total_limit {keep}, one more while saving){best} need about "
            f"{readable_size(needed)}, and {readable_size(free + held)} is free or held by the folder's checkpoints "
            "(free space, lower --save_total_limit, or choose another --output_dir)")


def gather_full_state(model, optimizer, device) -> tuple:
    """(model state dict, optimizer state dict or None) of a sharded (FSDP) `model` computing on `device` and its
    `optimizer` (or None), gathered in full onto the main process, in host memory: a collective, every rank calls it
    (the others get empty dicts, or on CPU ranks the same full dicts). Keys are the unwrapped model's parameter names,
    which the optimizer state is keyed by too (not by position), so that `load_full_optimizer_state` shards it again
    for any number of ranks."""
    # Offloading copies device tensors to the host. On CPU ranks torch's FSDP 1 would hand back views of the one
    # buffer it gathers every optimizer state into (`.cpu()` copies nothing there), so that Adam's first moment would
    # read as its second; without offloading it clones each state.
    options = StateDictOptions(full_state_dict=True, cpu_offload=torch.device(device).type != "cpu")
    model_state = get_model_state_dict(model, options=options)
    optimizer_state = None if optimizer is None else get_optimizer_state_dict(model, optimizer, options=options)
    return model_state, optimizer_state


def tied_parameter_aliases(model) -> set:
    """The names under which a parameter appears a second time (tied weights): save_pretrained writes it once, under
    its first name, when it reads the model itself, but keeps every key of a state dict it is given."""
    every_name = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every_name - {name for name, _ in model.named_parameters()}


def _keyed_by_name(optimizer_state: dict) -> bool:
    return any(isinstance(key, str) for group in optimizer_state["param_groups"] for key in group["params"])


def optimizer_state_by_name(state: dict) -> dict:
    """A torch optimizer state dict keyed by parameter name, as `load_full_optimizer_state` reads it: as an FSDP run
    writes it, or converted from one keyed by position (`Optimizer.state_dict`'s) through its groups' `param_names`."""
    if _keyed_by_name(state):
        return state
    groups = state["param_groups"]
    names = {index: name for group in groups for index, name in zip(group["params"], group["param_names"])}
    return {"state": {names[index]: value for index, value in state["state"].items()},
            "param_groups": [dict(group, params=list(group["param_names"])) for group in groups]}


def optimizer_state_by_position(state: dict) -> dict:
    """A torch optimizer state dict keyed by position, as `Optimizer.load_state_dict` reads it: as written without
    FSDP, or converted from one keyed by name (`optimizer_state_by_name`'s), numbered in its groups' order."""
    if not _keyed_by_name(state):
        return state
    groups = state["param_groups"]
    positions = {name: index for index, name in enumerate(name for group in groups for name in group["params"])}
    return {"state": {positions[name]: value for name, value in state["state"].items()},
            "param_groups": [dict(group, params=[positions[name] for name in group["params"]]) for group in groups]}


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Load a full optimizer state dict (`gather_full_state`'s) into this rank's shard of a sharded `model`'s
    optimizer; every rank calls it with the same dict."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


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
    "MANIFEST",
    "capture_rng_state",
    "checkpoint_problem",
    "config_differences",
    "data_signature",
    "disk_space_warning",
    "estimated_checkpoint_bytes",
    "readable_size",
    "weights_bytes",
    "restore_rng_state",
    "point_to",
    "step_checkpoints",
    "prune_checkpoints",
    "save_checkpoint",
    "save_best",
    "resolve_checkpoint",
    "resolve_resume",
    "gather_full_state",
    "tied_parameter_aliases",
    "optimizer_state_by_name",
    "optimizer_state_by_position",
    "load_full_optimizer_state",
    "load_trainer_state",
    "load_rng_state",
]
