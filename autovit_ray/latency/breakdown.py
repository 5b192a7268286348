"""Per-operator latency breakdown with torch's profiler (the paper's Figure 4).

Every leaf of interest is wrapped in a `record_function` range named by its category, via
forward hooks: attention (Q-K-V, matmuls, softmax, projection), MLP (both linears and the
activation), conv (every Conv2d, with its BatchNorm/activation counted as norm/other), norm
(BatchNorm and LayerNorm). The profiler's CPU time of those ranges, summed per category, is the
breakdown; "other" is the rest of the forward pass (unfold/fold reshapes, residual adds,
concatenation, activations outside MLPs, pooling, the classifier, Python overhead).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ..nn.blocks import MLP, Attention
from ._files import atomic_path

CATEGORIES = ("attention", "mlp", "conv", "norm", "other")
_TOTAL = "autovit::forward"


def _category(module: nn.Module) -> str | None:
    if isinstance(module, Attention):
        return "attention"
    if isinstance(module, MLP):
        return "mlp"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        return "norm"
    return None


def _label_ranges(model: nn.Module) -> list[Any]:
    """Forward hooks that open a record_function range per categorised module (outermost only:
    the linears inside an Attention count as attention)."""
    hooks, open_ranges = [], []

    def claimed(name: str) -> bool:
        return any(name.startswith(prefix + ".") for prefix in claimed_prefixes)

    claimed_prefixes: list[str] = []
    for name, module in model.named_modules():
        category = _category(module)
        if category is None or claimed(name):
            continue
        claimed_prefixes.append(name)

        def pre(_m: nn.Module, _args: tuple, category: str = category) -> None:
            ctx = record_function(category)
            ctx.__enter__()
            open_ranges.append(ctx)

        def post(_m: nn.Module, _args: tuple, _out: Any) -> None:
            open_ranges.pop().__exit__(None, None, None)

        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return hooks


def operator_breakdown(model: nn.Module, resolution: int, iterations: int = 10, warmup: int = 3,
                       threads: int = 1) -> dict[str, float]:
    """Mean CPU ms per forward pass in each category (+ "total"), batch 1, eval, inference mode."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # kineto's GPU-probe errors are noise on a CPU box
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = model.eval()
    x = torch.randn(1, 3, resolution, resolution)
    hooks = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
        hooks = _label_ranges(model)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iterations):
                with record_function(_TOTAL):
                    model(x)
    finally:
        for hook in hooks:
            hook.remove()
        torch.set_num_threads(previous_threads)
    totals = dict.fromkeys((*CATEGORIES, "total"), 0.0)
    for event in prof.events():
        if event.name in CATEGORIES:
            totals[event.name] += event.cpu_time_total
        elif event.name == _TOTAL:
            totals["total"] += event.cpu_time_total
    out = {k: v / iterations / 1e3 for k, v in totals.items()}  # us -> ms per pass
    out["other"] = max(0.0, out["total"] - sum(out[c] for c in CATEGORIES if c != "other"))
    return out


def breakdown_chart(results: Sequence[tuple[str, dict[str, float]]], path: str | Path,
                    title: str = "Latency breakdown (torch CPU profiler)") -> Path:
    """Horizontal stacked bars, one per model, one colour per operator category (like Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.55 * len(results)))
    labels = [label for label, _ in results]
    left = [0.0] * len(results)
    for category in CATEGORIES:
        widths = [r[category] for _, r in results]
        ax.barh(labels, widths, left=left, label=category)
        left = [a + b for a, b in zip(left, widths)]
    for i, (_, r) in enumerate(results):
        ax.text(left[i], i, f" {r['total']:.1f} ms", va="center", fontsize=8)
    ax.set(xlabel="CPU time per image (ms)", title=title)
    ax.set_xlim(0, max(left) * 1.18 if left else 1)
    ax.invert_yaxis()
    ax.legend(ncol=len(CATEGORIES), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28 - 0.1 / len(results)))
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)


def write_breakdown_json(results: Sequence[tuple[str, dict[str, float]]], path: str | Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps([{"model": label, **r} for label, r in results], indent=2))
    return Path(path)
