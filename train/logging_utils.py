"""Run records: a JSON-lines history of every step (the loss curve, also what resume truncates),
TensorBoard-safe hyperparameters, and the loss-curve PNG written at the end of a run."""

import json
import math
import logging
from pathlib import Path

HISTORY_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


def get_logger(name="medvl.pretrain"):
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class MetricsHistory:
    """Append-only JSON lines, one record per logged event ({"step": ..., "kind": "train"|"eval"|...})."""

    def __init__(self, output_dir):
        self.path = Path(output_dir) / HISTORY_FILE

    def append(self, record: dict):
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self, kind=None) -> list:
        if not self.path.is_file():
            return []
        records = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in records if kind is None or r.get("kind") == kind]

    def truncate_after(self, step: int):
        """Drop records past `step` (written by a run that died after its last checkpoint)."""
        kept = [r for r in self.read() if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def tensorboard_hparams(values: dict) -> dict:
    """TensorBoard accepts only int/float/str/bool hyperparameters: stringify the rest."""
    safe = {}
    for key, value in values.items():
        if isinstance(value, dict):
            safe.update(tensorboard_hparams({f"{key}.{k}": v for k, v in value.items()}))
        elif isinstance(value, (bool, int, float, str)):
            safe[key] = value
        else:
            safe[key] = str(value)
    return safe


def term_priors(global_batch_size: int) -> dict:
    """What each term scores when nothing is learnt: ITC ln(N) (uniform over the N texts of a global batch; with
    the label-aware target too), ITM the entropy of its label share (one positive to two hard negatives)."""
    share = 1.0 / 3.0
    return {
        "itc": math.log(global_batch_size),
        "itm": -(share * math.log(share) + (1 - share) * math.log(1 - share)),
    }


def plot_loss_curves(history: MetricsHistory, png_path, priors: dict | None = None) -> Path:
    """One panel per loss term with its prior (dashed) where known, then the learning rate and the zero-shot
    metrics, against the step: a term that hugs its prior has learnt nothing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = priors or {}
    train = history.read("train")
    evals = history.read("eval")
    term_names = sorted({name for r in train for name in r.get("terms", {})})
    panels = len(term_names) + 1 + bool(evals)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    axes = axes.ravel()
    steps = [r["step"] for r in train]
    for axis, name in zip(axes, term_names):
        axis.plot(steps, [r["terms"].get(name, float("nan")) for r in train], label=name, color="tab:blue")
        if name in priors:
            axis.axhline(priors[name], color="gray", linestyle="--", label=f"prior {priors[name]:.3f}")
        axis.set(xlabel="step", ylabel="loss", title=f"{name} loss")
        axis.legend()
    schedule = axes[len(term_names)]
    schedule.plot(steps, [r["lr"] for r in train], color="tab:purple")
    schedule.set(xlabel="step", ylabel="learning rate", title="schedule")
    if evals:
        validation = axes[len(term_names) + 1]
        eval_steps = [r["step"] for r in evals]
        for key in ("zero_shot_auc", "recall@5"):
            if key in evals[0]:
                validation.plot(eval_steps, [r[key] for r in evals], marker="o", label=key)
        validation.set(xlabel="step", ylim=(0, 1), title="validation")
        validation.legend()
    for axis in axes[panels:]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)


__all__ = ["MetricsHistory", "get_logger", "tensorboard_hparams", "plot_loss_curves", "term_priors", "HISTORY_FILE", "LOSS_CURVE_FILE"]
