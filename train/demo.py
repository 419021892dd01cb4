"""`medvl demo`: everything MedVL does, on SynthCXR, in one command.

    medvl demo                       # about 10 minutes on 2 CPU cores: demo_out/report.html
    medvl demo --quick --out q       # the tests' shorter setting (about 8 minutes)
    medvl demo --device cuda --scale small
    medvl demo --from finetune       # re-run fine-tuning and everything after it

Stages, each in its own folder under --out: data (SynthCXR written in the MIMIC-CXR-JPG layout with its
train/validate/test split file, and in the VQA-RAD layout), tokenizer (BPE on the training reports), pretrain
(contrastive + MLM + ITM; zero-shot AUC and the laterality probe on the validation split as it goes),
classification (full fine-tuning), vqa (LoRA adapters, the answer head in full; closed answers classified, open
ones generated), report_generation (full fine-tuning), evaluate (every task on the test split against the majority
answer and the untrained model, zero-shot, subgroups and calibration), export (one Hub-ready folder with the card, the Space
and the task models, reloaded offline through the Auto classes), report (results table, report.html and report.md).
Every training stage is the project's own script (`train/pretrain.py`, `train/finetune.py`,
`train/evaluate_model.py`, `medvl export`) run as a separate process with the arguments it prints.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from train.demo_runner import StageRecord
from train.demo_scales import LORA, SCALES, choose_scale
from train.user_errors import UserError

CONFIGS = Path(__file__).resolve().parent / "configs"
STAGES = ("data", "tokenizer", "pretrain", "classification", "vqa", "report_generation", "evaluate", "export",
          "report")
STAGE_ALIASES = {"finetune": "classification"}
EXPORT_CHECK_FILE = "export_check.json"
REPORT_FILES = ("report.html", "report.md")
# Files a stage writes at the top of --out (removed with it).
ROOT_FILES = {"export": (EXPORT_CHECK_FILE,), "report": REPORT_FILES}


class Demo:
    def __init__(self, out, scale, device, seed):
        self.out, self.scale, self.device, self.seed = Path(out), scale, device, seed
        self.precision = "bf16" if device == "cuda" else None  # `auto` keeps fp32: the CPU default wherever it runs

    # Paths the stages hand on.
    @property
    def mimic(self) -> Path:
        return self.out / "data" / "mimic-cxr-jpg"

    @property
    def vqa_rad(self) -> Path:
        return self.out / "data" / "vqa" / "vqa-rad"

    @property
    def pretrained(self) -> Path:
        return self.out / "pretrain" / "checkpoint-best"

    def best(self, task: str) -> Path:
        return self.out / task / "checkpoint-best"

    def run_command(self, command: list, log_name: str) -> None:
        """One of the project's commands in its own process, its output shown as it comes."""
        program = "medvl" if command[2] == "train.cli" else f"python -m {command[2]}"
        print(f"  $ {program} {' '.join(str(part) for part in command[3:])}", flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        completed = subprocess.run([str(part) for part in command], env=env)
        if completed.returncode != 0:
            raise UserError(f"the {log_name} command stopped with status {completed.returncode} (its output is above; "
                            f"`medvl demo --out {self.out}` continues from this stage)")

    def module(self, name: str, *arguments) -> list:
        return [sys.executable, "-m", name, *arguments]

    # The stages.
    def data(self, folder: Path) -> None:
        scale = self.scale
        self.run_command(self.module("train.cli", "data", "synth", "--out", folder, "--n", scale.studies, "--size",
                                     scale.image_size, "--seed", self.seed, "--split", scale.split, "--layouts",
                                     "mimic-cxr-jpg"), "data")
        self.run_command(self.module("train.cli", "data", "synth", "--out", folder / "vqa", "--n", scale.vqa_studies,
                                     "--size", scale.image_size, "--seed", self.seed + 1, "--split", scale.split,
                                     "--layouts", "vqa-rad"),
                         "data")

    def tokenizer(self, folder: Path) -> None:
        from processing import load_mimic_cxr
        from processing.tokenizer_training import train_clinical_tokenizer

        reports = load_mimic_cxr(self.mimic, split="train", per="study")["report"]
        tokenizer = train_clinical_tokenizer(reports, vocab_size=1000, max_length=128, show_progress=True)
        tokenizer.save_pretrained(str(folder))
        print(f"  {len(tokenizer)} tokens learnt from {len(reports)} training reports", flush=True)

    def pretrain(self, folder: Path) -> None:
        scale = self.scale
        steps = scale.pretrain_steps
        self.run_command(self.module(
            "train.pretrain", "--config", CONFIGS / "pretrain_tiny_synthcxr.yaml", "--model_preset", scale.preset,
            "--model_overrides", f"vision_config.image_size={scale.image_size}", "--data", f"mimic-cxr:{self.mimic}",
            "--tokenizer", self.out / "tokenizer", "--per_device_batch_size", scale.pretrain_batch_size,
            "--max_steps", steps, "--warmup_steps", max(1, steps // 10), "--eval_steps", max(1, steps // 2),
            "--save_steps", max(1, steps // 2), "--early_stopping_patience", 0, "--augment",
            str(scale.pretrain_augment).lower(), "--seed", self.seed, "--mixed_precision", self.precision or "no",
            "--output_dir", folder), "pretraining")

    def finetune(self, task: str, config: str, folder: Path, *extra) -> None:
        lora = ("--lora", LORA[task]) if task in LORA else ()
        self.run_command(self.module(
            "train.finetune", "--config", CONFIGS / config, "--init", self.pretrained, "--seed", self.seed, *lora,
            "--bootstrap_samples", self.scale.bootstrap_samples, "--report_to", "none", "--logging_steps", 5,
            "--output_dir", folder,
            *([f"--{self.precision}"] if self.precision else []), *extra), f"{task} fine-tuning")

    def classification(self, folder: Path) -> None:
        self.finetune("classification", "finetune_tiny_synthcxr.yaml", folder, "--data", f"mimic-cxr:{self.mimic}",
                      "--num_train_epochs", self.scale.classification_epochs)

    def vqa(self, folder: Path) -> None:
        self.finetune("vqa", "finetune_vqa_tiny_synthcxr.yaml", folder, "--data", f"vqa-rad:{self.vqa_rad}",
                      "--num_train_epochs", self.scale.vqa_epochs)

    def report_generation(self, folder: Path) -> None:
        self.finetune("report_generation", "finetune_report_tiny_synthcxr.yaml", folder, "--data",
                      f"mimic-cxr:{self.mimic}", "--max_steps", self.scale.report_steps,
                      "--max_new_tokens", self.scale.max_new_tokens)

    def evaluate(self, folder: Path) -> None:
        from train.demo_evaluate import evaluate_all

        evaluate_all(self, folder)

    def export(self, folder: Path) -> None:
        tasks = ("classification", "vqa", "report_generation")
        evaluated = self.out / "evaluate"
        self.run_command(self.module(
            "train.cli", "export", "--checkpoint", self.pretrained, "--eval", evaluated / "zero_shot.json",
            "--out", folder, "--overwrite", "--no-check", "--repo", "medvl/medvl-synthcxr-demo",
            *[part for task in tasks for part in ("--task-checkpoint", f"{task}={self.best(task)}")],
            *[part for task in tasks for part in ("--task-eval", f"{task}={evaluated / (task + '.json')}")],
        ), "export")
        from train.demo_export import write_export_check

        write_export_check(self, folder, self.out / EXPORT_CHECK_FILE)

    def report(self, folder: Path) -> None:
        from train.demo_report import write_report

        write_report(self, folder)


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", help="the demo's folder (default demo_out)")
    parser.add_argument("--quick", action="store_true", help="about 8 minutes: fewer studies and steps (the tests')")
    parser.add_argument("--scale", default="tiny", choices=[name for name in SCALES if name != "quick"],
                        help="tiny (default, CPU), small or base (for a GPU): studies, image size, model, steps")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: a GPU when there is one")
    parser.add_argument("--from", dest="from_stage", default=None, choices=[*STAGES, *STAGE_ALIASES],
                        help="re-run this stage and every later one (finetune: the three fine-tuning stages); "
                             "by default a run continues after the last finished stage")
    parser.add_argument("--seed", type=int, default=0)


def register(parser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    add_arguments(parser)
    parser.set_defaults(func=run_demo)


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA device here (use --device cpu)")


def run_demo(args) -> int:
    try:
        scale_name, scale = choose_scale(args.scale, args.quick)
    except ValueError as error:
        raise UserError(str(error)) from None
    check_device(args.device)
    demo = Demo(args.out, scale, args.device, args.seed)
    settings = {"scale": scale_name, **scale.as_dict(), "seed": args.seed}
    try:
        record = StageRecord(demo.out, settings, STAGES, ROOT_FILES, restart=args.from_stage == STAGES[0])
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.from_stage:
        record.forget_from(STAGE_ALIASES.get(args.from_stage, args.from_stage))
    for name in record.remove_unfinished():
        print(f"removed {demo.out / name}: left by a run that stopped during that stage", flush=True)
    started = time.time()
    for number, name in enumerate(STAGES, 1):
        header = f"[{number}/{len(STAGES)}] {name}"
        if record.finished(name):
            print(f"{header}: finished in an earlier run ({record.seconds(name):.0f} s), kept", flush=True)
            continue
        print(f"{header} ...", flush=True)
        try:
            seconds = record.run(name, getattr(demo, name))
        except KeyboardInterrupt:
            print(f"\n{header}: interrupted; its folder is removed; `medvl demo --out {demo.out}` continues here",
                  file=sys.stderr, flush=True)
            return 130
        print(f"{header}: done in {seconds:.0f} s", flush=True)
    total = sum(record.seconds(name) for name in STAGES)
    print(f"demo finished: {time.time() - started:.0f} s this run, {total:.0f} s over all stages; open "
          f"{demo.out / REPORT_FILES[0]}")
    print(f"the Space on the exported folder: python {demo.out / 'export' / 'space' / 'app.py'}")
    return 0


__all__ = ["STAGES", "Demo", "register", "run_demo"]
