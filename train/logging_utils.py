"""Run records: a JSON-lines history of every step (the loss curve, also what resume truncates),
TensorBoard-safe hyperparameters, and the loss-curve PNG written at the end of a run."""

import json
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


def plot_loss_curves(history: MetricsHistory, png_path) -> Path:
    """Loss terms, learning rate and zero-shot metrics against the step, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = history.read("train")
    evals = history.read("eval")
    term_names = sorted({name for r in train for name in r.get("terms", {})})
    panels = 2 + bool(evals)
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], label="loss", color="black")
    for name in term_names:
        axes[0].plot(steps, [r["terms"].get(name, float("nan")) for r in train], label=name, alpha=0.8)
    axes[0].set(xlabel="step", ylabel="loss", title="pretraining losses")
    axes[0].legend()
    axes[1].plot(steps, [r["lr"] for r in train], color="tab:purple")
    axes[1].set(xlabel="step", ylabel="learning rate", title="schedule")
    if evals:
        eval_steps = [r["step"] for r in evals]
        for key in ("zero_shot_auc", "recall@5"):
            if key in evals[0]:
                axes[2].plot(eval_steps, [r[key] for r in evals], marker="o", label=key)
        axes[2].set(xlabel="step", ylim=(0, 1), title="validation")
        axes[2].legend()
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return Path(png_path)


__all__ = ["MetricsHistory", "get_logger", "tensorboard_hparams", "plot_loss_curves", "HISTORY_FILE", "LOSS_CURVE_FILE"]
