"""Figures of the clinical evaluation (see `train.clinical_eval`): the reliability diagram, the per-label
confusion matrices and the subgroup comparison. Each function writes one PNG and returns its path."""

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _distance(value, bound) -> float:
    return 0.0 if math.isnan(bound) else abs(bound - value)


def reliability_plot(calibration: dict, path, title="") -> str:
    """Observed positive rate against mean predicted probability per bin (the diagonal is perfect calibration),
    with the share of entries per bin below."""
    plt = _pyplot()
    bins = [b for b in calibration["bins"] if b["count"]]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(4.8, 5.6), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    top.plot([b["mean_probability"] for b in bins], [b["positive_rate"] for b in bins], "o-", lw=2,
             label=f"model (ECE {calibration['ece']:.3f})")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed positive rate",
            title=title or f"reliability ({calibration['entries']} study-label entries)")
    top.legend(loc="upper left", fontsize=8)
    total = max(1, sum(b["count"] for b in calibration["bins"]))
    width = 1.0 / max(1, calibration["n_bins"])
    bottom.bar([b["low"] + width / 2 for b in calibration["bins"]], [b["count"] / total for b in calibration["bins"]],
               width=width * 0.9, color="tab:blue", alpha=0.6)
    bottom.set(xlabel="predicted probability", ylabel="share")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def confusion_plot(confusion: dict, path) -> str:
    """One 2x2 matrix per label (rows: truth, columns: prediction at the threshold)."""
    plt = _pyplot()
    labels = list(confusion["per_label"])
    columns = min(4, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.flat[len(labels):]:
        axis.axis("off")
    for axis, name in zip(axes.flat, labels):
        m = confusion["per_label"][name]
        cells = [[m["tn"], m["fp"]], [m["fn"], m["tp"]]]
        axis.imshow(cells, cmap="Blues")
        for i in range(2):
            for j in range(2):
                axis.text(j, i, str(cells[i][j]), ha="center", va="center", fontsize=10)
        axis.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize=7)
        axis.set_yticks([0, 1], ["true 0", "true 1"], fontsize=7)
        axis.set_title(name, fontsize=8)
    figure.suptitle(f"confusion matrices at probability >= {confusion['threshold']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def subgroup_plot(subgroups: dict, overall: float, path) -> str:
    """Macro AUC with its 95% interval per subgroup, one panel per attribute; the whole set's macro AUC dashed."""
    plt = _pyplot()
    attributes = [name for name, record in subgroups.items() if record["groups"]]
    figure, axes = plt.subplots(1, max(1, len(attributes)), figsize=(3.2 * max(1, len(attributes)), 3.4),
                                squeeze=False)
    for axis, attribute in zip(axes.flat, attributes):
        groups = subgroups[attribute]["groups"]
        names = [name for name in groups if groups[name].get("auroc_macro") is not None]
        values = [groups[name]["auroc_macro"] for name in names]
        errors = [[_distance(v, groups[n]["auroc_macro_ci"][side]) for n, v in zip(names, values)] for side in (0, 1)]
        axis.bar(range(len(names)), values, yerr=errors, capsize=3, color="tab:blue", alpha=0.7)
        axis.axhline(overall, ls="--", color="grey", lw=1)
        axis.set_xticks(range(len(names)), [f"{n}\n(n={groups[n]['count']})" for n in names], fontsize=7)
        axis.set(ylim=(0, 1), title=attribute, ylabel="macro AUC")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


__all__ = ["confusion_plot", "reliability_plot", "subgroup_plot"]
