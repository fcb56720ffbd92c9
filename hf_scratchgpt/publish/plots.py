"""Loss curves drawn from a Trainer's ``log_history``: the PNG both the model card and the run report show.

plot_loss_curves(json.load(open("RUN/pretrain/trainer_state.json"))["log_history"], "loss_curves.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402


def loss_curves(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, loss) points for training and validation from a Trainer's ``state.log_history``."""
    curves: dict[str, list[tuple[int, float]]] = {"train": [], "validation": []}
    for entry in log_history:
        if "loss" in entry:
            curves["train"].append((entry["step"], float(entry["loss"])))
        if "eval_loss" in entry:
            curves["validation"].append((entry["step"], float(entry["eval_loss"])))
    return curves


def plot_loss_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "Loss") -> Path:
    """Plot training and validation loss against the optimizer step; returns the PNG path."""
    curves = loss_curves(log_history)
    if not curves["train"] and not curves["validation"]:
        raise ValueError("The log history holds no 'loss' or 'eval_loss' entries to plot.")
    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    for name, points in curves.items():
        if points:
            steps, losses = zip(*points, strict=True)
            axes.plot(steps, losses, marker="o" if name == "validation" else None, label=f"{name} loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("cross-entropy (nats / token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


__all__ = ["loss_curves", "plot_loss_curves"]
