"""`medvl export` and `medvl push`: publish a training checkpoint as one Hub-ready folder.

    medvl export --checkpoint runs/ft1/checkpoint-best --eval runs/ft1/eval_results.json --out hub/medvl-ft1
    medvl export --checkpoint runs/ft1/checkpoint-best --lora adapter --out hub/medvl-ft1-adapter
    medvl export --checkpoint runs/pretrain/checkpoint-best --out hub/medvl-suite \
        --task-checkpoint report_generation=runs/report/checkpoint-best \
        --task-eval report_generation=runs/report/eval_results.json \
        --task-checkpoint classification=runs/ft1/checkpoint-best --task-checkpoint vqa=runs/vqa/checkpoint-best
    medvl push hub/medvl-ft1 --repo org/medvl-ft1 --dry-run

The checkpoint is loaded here with the training code's own loaders (a full model, or base + LoRA adapter through
`train.lora_presets.load_finetuned_model`); `hub_cards` writes the folder, the card and the Space.
"""

import json
from pathlib import Path

from train.user_errors import MissingPathError, UserError

EXPORT_EPILOG = """The folder holds config.json (auto_map for the Auto classes whose weights it holds), safetensors
weights, the remote code, the processor and tokenizer files, adapter/ (with --lora adapter), README.md (the model
card: metrics and intervals from --eval, or "not evaluated") and space/ (the Gradio demo: python OUT/space/app.py).
Each --task-checkpoint TASK=DIR (report_generation, classification, vqa; LoRA checkpoints are merged) goes into the
subfolder OUT/TASK/ with its own config.json, weights, code and processor: AutoModelForImageTextToText /
AutoModelForImageClassification / AutoModelForVisualQuestionAnswering .from_pretrained(OUT, subfolder=TASK,
trust_remote_code=True); the card lists it with its usage and --task-eval TASK=JSON, and the Space uses it.
The folder is then reloaded in a fresh offline process as a check, task models included (skip with --no-check)."""


def register(parser):
    if parser.prog.split()[-1] == "push":
        return register_push(parser)
    parser.epilog = EXPORT_EPILOG
    parser.add_argument("--checkpoint", required=True, help="a saved MedVL folder (checkpoint-best, a LoRA checkpoint)")
    parser.add_argument("--out", required=True, help="the folder to write (must be new or empty, see --overwrite)")
    parser.add_argument("--eval", default=None, help="the run's evaluation JSON (eval_results.json)")
    parser.add_argument("--lora", choices=("merge", "adapter"), default="merge",
                        help="a LoRA checkpoint: merge the adapter into the weights (default), or keep it in adapter/")
    parser.add_argument("--lora-base", default=None, help="the adapter's base model folder, if moved since training")
    parser.add_argument("--run-dir", default=None,
                        help="the run folder with run_config.yaml and train_summary.json (default: the checkpoint's)")
    parser.add_argument("--repo", default=None, help="the Hub repository the card's usage names (org/name)")
    parser.add_argument("--base-model", default=None, help="the base model's Hub id, for the card's base_model")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--max-shard-size", default="2GB", help="weights above this are sharded (default 2GB)")
    parser.add_argument("--task-checkpoint", action="append", default=[], metavar="TASK=DIR",
                        help="a task model to keep in the subfolder TASK/ (report_generation, classification, vqa); "
                             "repeat for several")
    parser.add_argument("--task-eval", action="append", default=[], metavar="TASK=JSON",
                        help="the evaluation JSON of a --task-checkpoint model, for the card")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--no-check", action="store_true", help="skip the fresh-process reload check")
    parser.set_defaults(func=run_export)


def register_push(parser):
    parser.add_argument("folder", help="a folder written by `medvl export`")
    parser.add_argument("--repo", required=True, help="org/name on the Hub")
    parser.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None, help="a Hub token (default: the logged-in one, or HF_TOKEN)")
    parser.set_defaults(func=run_push)


def load_checkpoint(checkpoint, lora_mode: str, lora_base=None):
    """(model to save, adapter folder or None, processor) from a checkpoint folder."""
    from train.finetune_model import load_processor
    from train.lora_presets import ADAPTER_CONFIG, load_finetuned_model

    folder = Path(checkpoint).resolve()
    if not (folder / "config.json").is_file():
        raise MissingPathError(f"--checkpoint {checkpoint}: not a saved MedVL folder (no config.json; give "
                               "checkpoint-best, checkpoint-<step> or a fine-tuning run's output folder)")
    model = load_finetuned_model(folder, base_model=lora_base)
    adapter_dir = None
    if (folder / ADAPTER_CONFIG).is_file():
        model = model.merge_and_unload() if lora_mode == "merge" else model.unload()
        adapter_dir = folder if lora_mode == "adapter" else None
    processor = load_processor(folder, model.config.vision_config.image_size)
    return model.eval(), adapter_dir, processor


def read_json(path, flag):
    if not Path(path).is_file():
        raise UserError(f"{flag} {path}: no such file (give the run's eval_results.json)")
    return json.loads(Path(path).read_text())


def task_pairs(values, flag, tasks) -> dict:
    """{task: value} from TASK=VALUE arguments, each task known and given once."""
    pairs = {}
    for value in values:
        task, sep, path = value.partition("=")
        if not sep or not path or task not in tasks:
            raise UserError(f"{flag} {value}: expected TASK=PATH with TASK one of {', '.join(sorted(tasks))}")
        if task in pairs:
            raise UserError(f"{flag}: {task} given twice (one model per task)")
        pairs[task] = path
    return pairs


def load_task_models(args, tasks) -> tuple:
    """({task: (model, processor)}, {task: evaluation JSON}) of --task-checkpoint / --task-eval (LoRA merged)."""
    checkpoints = task_pairs(args.task_checkpoint, "--task-checkpoint", tasks)
    evals = task_pairs(args.task_eval, "--task-eval", tasks)
    if set(evals) - set(checkpoints):
        raise UserError(f"--task-eval {', '.join(sorted(set(evals) - set(checkpoints)))}: no --task-checkpoint for "
                        "that task (give the model with its evaluation)")
    evals = {task: read_json(path, "--task-eval") for task, path in evals.items()}
    for task, path in checkpoints.items():
        if not Path(path).is_dir():
            raise UserError(f"--task-checkpoint {task}={path}: no such folder (give a saved checkpoint folder)")
    return {task: load_checkpoint(path, "merge")[::2] for task, path in checkpoints.items()}, evals


def run_export(args):
    # Path mistakes first: the imports below take seconds.
    if not Path(args.checkpoint).is_dir():
        raise UserError(f"--checkpoint {args.checkpoint}: no such folder (give a saved checkpoint folder)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file (give a new or empty folder)")
    if not args.overwrite and Path(args.out).is_dir() and any(Path(args.out).iterdir()):
        raise UserError(f"--out {args.out} exists and is not empty (give a new folder, or --overwrite to replace it)")
    from hub_cards.export import TASK_CLASSES, export_folder
    from hub_cards.reload_check import reload_problems

    eval_results = read_json(args.eval, "--eval") if args.eval else None
    task_models, task_evals = load_task_models(args, TASK_CLASSES)
    model, adapter_dir, processor = load_checkpoint(args.checkpoint, args.lora, args.lora_base)
    checkpoint = Path(args.checkpoint).resolve()
    summary = export_folder(
        model, processor, args.out, eval_results=eval_results, run_dir=args.run_dir or checkpoint.parent,
        adapter_dir=adapter_dir, repo_id=args.repo, max_shard_size=args.max_shard_size, license=args.license,
        base_model=args.base_model, overwrite=args.overwrite, checkpoint_name=checkpoint.name,
        task_models=task_models, task_evals=task_evals,
    )
    print(f"wrote {summary['folder']}: {', '.join(summary['weights'])}; auto classes {summary['auto_classes']}; "
          f"pipeline tag {summary['pipeline_tag']}; {'evaluated' if summary['evaluated'] else 'not evaluated'}"
          + "".join(f"; {task} model in {sub}/" for task, sub in summary["task_models"].items()))
    if not args.no_check:
        problems = reload_problems(args.out)
        if problems:
            raise SystemExit(f"the exported folder does not reload: {problems[0]}")
        print("reload check: the folder loads offline in a fresh process from its own code")
    return 0


def run_push(args):
    if not Path(args.folder).is_dir():
        raise UserError(f"{args.folder}: no such folder (give a folder written by `medvl export`)")
    from hub_cards.push import push_folder

    try:
        report = push_folder(args.folder, args.repo, dry_run=args.dry_run, private=args.private, token=args.token)
    except ValueError as error:  # push_folder's checks of the folder and the repository name
        raise UserError(str(error)) from None
    for name, size in report["files"]:
        print(f"{size:>14,d}  {name}")
    print(f"{report['total_bytes']:>14,d}  bytes in {len(report['files'])} files -> {report['repo_id']} "
          f"({report['commit_message']!r})")
    print("dry run: nothing uploaded" if args.dry_run else f"uploaded: {report['commit_url']}")
    return 0


__all__ = ["load_checkpoint", "load_task_models", "register", "run_export", "run_push", "task_pairs"]
