"""Benchmark: rank fidelity of the weight-shared XXS supernet on CIFAR-10 (issue 14, part 4).

Does the accuracy a subnet inherits from the supernet rank archs as training each alone would? The
search trusts that it does; no published number exists for hybrid CNN + ViT supernets.

    .venv/bin/python bench/rank_fidelity.py                  # resumable: rerun to continue
    .venv/bin/python bench/rank_fidelity.py --report-only    # section, JSON and plot again

It works in the CIFAR-10 result's artifact directory, once its supernet and tables exist (``$AUTOVIT_BENCH_DIR/cifar10_result``,
default ``~/.cache/autovit-ray/bench``; bookkeeping in ``rank_fidelity.json`` there), with its recipe,
splits, data path and precision; run it from a pinned copy of the code. bench/cifar10_beyond.py runs it
as its last stage.

1. ``pick``: 12 subnets spread over the latency range: 10,000 random archs (seed 0) sorted by their
   torch-cpu LUT latency, and the arch at each quantile (i + 0.5) / 12.
2. ``stand-alone``: each trained from scratch through ``python -m autovit_ray.train --arch`` on a short
   schedule, the same for all: 5 epochs (cosine over the 5, one warm-up epoch), the first result's
   recipe otherwise. Short on purpose (12 trainings of about 7 min each on 2 cores); its ranking is
   what is compared, not its accuracy level.
3. ``inherited``: each subnet's full 5k validation top-1 inherited from the no-KD supernet (and from the
   KD supernet when bench/cifar10_beyond.py has trained it), after BN recalibration; the stand-alone
   models' full 5k validation top-1 with their own BatchNorm statistics.
4. Kendall tau-b and Spearman rho between inherited and stand-alone top-1, with 95 % bootstrap
   intervals resampling the subnets.
5. ``teacher``: what a teacher for the paper's hard KD would cost here: training steps of timm
   ``resnet18`` with the usual CIFAR stem (3x3 conv, stride 1, no max-pool) interleaved with the
   peer's (batch 128, random tensors: compute only), scaled to 30 epochs of 45,000 images.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cifar10_beyond as beyond
import cifar10_result as base
import torch
from cifar10_result import Settings
from common import bench_dir, log, open_record, save_figure, write_json
from torch import nn

import autovit_ray
from autovit_ray import evaluation, stats
from autovit_ray.checkpoint import list_checkpoints, read_meta
from autovit_ray.data import build_loaders
from autovit_ray.io import atomic_write_text, replace_markdown_section
from autovit_ray.plan import count_params
from autovit_ray.space import Arch, SearchSpace, load_space

SECTION = "## Rank fidelity: inherited vs stand-alone accuracy on CIFAR-10 (issue 14, part 4)"
COMMAND = "nohup .venv/bin/python bench/rank_fidelity.py >> ~/.cache/autovit-ray/bench/rank_fidelity.log 2>&1 &"
NUM_SUBNETS = 12
RANDOM_ARCHS = 10_000
SHORT_EPOCHS = 5
SHORT_SCHEDULE = ("schedule.warmup_epochs=1",)
TEACHER_EPOCHS = 30


def run_name(index: int) -> str:
    return f"rank-{index:02d}"


def spread_over_latency(space: SearchSpace, latency: Callable[[Arch], float], count: int = NUM_SUBNETS,
                        pool: int = RANDOM_ARCHS, seed: int = 0) -> list[Arch]:
    """`count` distinct archs at evenly spaced latency quantiles of `pool` random archs, fastest first."""
    rng = random.Random(seed)
    unique = {a.arch_hash: a for a in (space.sample(rng) for _ in range(pool))}
    ranked = sorted(unique.values(), key=lambda a: (latency(a), a.arch_hash))
    if len(ranked) < count:
        raise ValueError(f"only {len(ranked)} distinct archs in {pool} draws; expected at least {count}")
    return [ranked[int((i + 0.5) / count * len(ranked))] for i in range(count)]


def rank_correlation(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                     seed: int = 0) -> dict[str, Any]:
    """Kendall tau-b and Spearman rho of paired values with 95 % bootstrap intervals over the pairs
    (`autovit_ray.stats.rank_correlation`), in this record's keys."""
    r = stats.rank_correlation(a, b, resamples=resamples, seed=seed)
    ci = {k: (list(r[k]) if r[k] is not None else None) for k in ("kendall_tau_ci", "spearman_rho_ci")}
    return {"kendall_tau": r["kendall_tau"], "spearman_rho": r["spearman_rho"], **ci, "subnets": r["n"],
            "resamples": r["resamples"]}


# ---------------------------------------------------------------------------------------------------
# Stages


def trained_result(out: Path) -> dict[str, Any]:
    """The first result's bookkeeping once its supernet is trained: this benchmark needs the recipe,
    the no-KD supernet and the torch-cpu table, not the peer or the searches (`bench/cifar10_result.py
    --stop-after search-inputs` makes all it needs)."""
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if "train" not in results or "pilot" not in results:
        raise SystemExit(f"{path} has no trained supernet: run `bench/cifar10_result.py --stop-after search-inputs` "
                         "(or the whole first result) first")
    return results


def check_setup(record: dict[str, Any], setup: dict[str, int]) -> None:
    """The subnets and schedule are fixed by the first run; a rerun with others is refused."""
    found = record.setdefault("setup", setup)
    if found != setup:
        raise base.Mismatch(f"this benchmark's artifacts were made with {found}, not {setup}: rerun with those "
                            "settings, or move rank_fidelity.json and the rank-* runs away to start again")


def pick_subnets(settings: Settings, count: int, record: dict[str, Any], save: Callable[[], None]) -> list[Arch]:
    if "subnets" not in record:
        table = base.load_lut(base.lut_path(settings, base.SEARCH_BACKEND), base.SEARCH_BACKEND)
        if table is None:
            raise SystemExit(f"no readable {base.SEARCH_BACKEND} table in {settings.out}: run "
                             "bench/cifar10_result.py first")
        space = load_space(base.SUPERNET, input_profile=base.INPUT_PROFILE)
        archs = spread_over_latency(space, table.predict_latency, count)
        record["subnets"] = [{"run": run_name(i), "arch": a.to_dict(), "name": str(a),
                              "lut_ms": table.predict_latency(a), "params": count_params(a, 10, space)}
                             for i, a in enumerate(archs)]
        save()
    return [Arch.from_dict(s["arch"]) for s in record["subnets"]]


def train_stand_alone(settings: Settings, recipe: str, archs: list[Arch], epochs: int, record: dict[str, Any],
                      save: Callable[[], None]) -> list[Path]:
    short = dataclasses.replace(settings, epochs=epochs)
    trains = record.setdefault("train", {})
    checkpoints = []
    for i, arch in enumerate(archs):
        run = run_name(i)
        arch_file = settings.out / f"{run}.arch.json"
        atomic_write_text(arch_file, arch.to_json())
        log(f"stand-alone {i + 1}/{len(archs)}: {arch}")
        beyond.train_run(short, recipe, run, SHORT_SCHEDULE, trains.setdefault(run, {}), save,
                         chunk=epochs, arch_file=arch_file, check=beyond.standalone_check(arch))
        checkpoints.append(base.final_supernet(short, short.config(recipe, SHORT_SCHEDULE), run))
    return checkpoints


def evaluate(settings: Settings, recipe: str, archs: list[Arch], standalone: list[Path], record: dict[str, Any],
             save: Callable[[], None]) -> None:
    """Full-validation top-1 of every subnet: inherited (per supernet) and stand-alone."""
    supernets = {"no-KD": base.final_supernet(settings, settings.config(recipe))}
    kd_runs = list_checkpoints(settings.out / beyond.KD_RUN, base.SUPERNET)
    if kd_runs and int(read_meta(kd_runs[-1])["epoch"]) >= settings.epochs:
        supernets["KD"] = base.final_supernet(settings, settings.config(recipe, beyond.KD_OVERRIDES), beyond.KD_RUN)
    loaders = build_loaders(base.config_from_saved(read_meta(supernets["no-KD"])["config"]).data)
    top1 = record.setdefault("val_top1", {})

    def accuracy(model: nn.Module) -> float:
        vector = evaluation.evaluate(model, loaders.val, per_image=True).correct_per_image
        return 100.0 * sum(vector) / len(vector)

    for i, arch in enumerate(archs):
        run = run_name(i)
        scores = top1.setdefault(run, {})
        for kind, checkpoint in supernets.items():
            if kind not in scores:
                scores[kind] = accuracy(base.subnet_of(checkpoint, arch, loaders))
        if "stand-alone" not in scores:
            scores["stand-alone"] = accuracy(beyond.standalone_model(standalone[i], arch))
        log(f"val top-1 {run}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
        save()
    runs = [run_name(i) for i in range(len(archs))]
    record["correlation"] = {kind: rank_correlation([top1[r][kind] for r in runs],
                                                    [top1[r]["stand-alone"] for r in runs])
                             for kind in supernets}
    save()


def cifar_resnet18() -> nn.Module:
    """timm resnet18 with the usual CIFAR stem: a 3x3 stride-1 stem conv and no max-pool (32x32 input)."""
    import timm

    model = timm.create_model("resnet18", num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def step_seconds(models: dict[str, nn.Module], batch: int = 128, warmup: int = 2, rounds: int = 6) -> dict[str, float]:
    """Median seconds of one AdamW training step per model, the models interleaved round by round."""
    x, y = torch.randn(batch, 3, base.RESOLUTION, base.RESOLUTION), torch.randint(0, 10, (batch,))
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(warmup + rounds):
        for key, model in models.items():
            model.train()
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizers[key].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[key].step()
            if r >= warmup:
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def teacher_cost(settings: Settings, adaptation: str, record: dict[str, Any], save: Callable[[], None]) -> None:
    if "teacher" in record:
        return
    torch.set_num_threads(settings.threads)
    teacher, peer = cifar_resnet18(), base.build_peer(adaptation)
    seconds = step_seconds({"teacher": teacher, "peer": peer})
    steps = base.TRAIN_IMAGES / 128 * TEACHER_EPOCHS
    record["teacher"] = {
        "model": "timm resnet18, CIFAR stem (3x3 stride 1, no max-pool)",
        "params": sum(p.numel() for p in teacher.parameters()), "step_s": seconds,
        "ratio_to_peer": seconds["teacher"] / seconds["peer"], "threads": settings.threads,
        "hours_30_epochs": seconds["teacher"] * steps / 3600, "peer_hours_30_epochs": seconds["peer"] * steps / 3600}
    log(f"teacher: {record['teacher']}")
    save()


# ---------------------------------------------------------------------------------------------------
# Report


def report_sections(record: dict[str, Any]) -> list[str]:
    setup = record.get("setup", {"subnets": NUM_SUBNETS, "short_epochs": SHORT_EPOCHS})
    epochs = setup["short_epochs"]
    lines = [SECTION, "",
             f"Command (resumable; rerun it to continue): `{COMMAND}`, from a pinned worktree, after the CIFAR-10 "
             "result (bench/cifar10_beyond.py runs it as its last stage); `--report-only` rewrites this section, "
             "`bench/results/rank_fidelity.json` and the plot.", "",
             f"{setup['subnets']} subnets at evenly spaced quantiles of the torch-cpu LUT latency of {RANDOM_ARCHS:,} "
             f"random archs (seed 0). Stand-alone: each trained from scratch for **{epochs} epochs** (cosine over "
             f"{epochs}, 1 warm-up epoch; otherwise the CIFAR-10 result's recipe, batch and data path), through "
             "`python -m autovit_ray.train --arch`. Inherited: the 30-epoch supernet's weights, BN recalibrated. "
             "Both on the full 5k validation split (the test split is not used here).", "",
             base.code_line(record), ""]
    subnets = record.get("subnets", [])
    top1 = record.get("val_top1", {})
    kinds = [k for k in ("no-KD", "KD") if any(k in v for v in top1.values())]
    if not subnets:
        return lines + ["Status: not started.", ""]
    lines += ["| # | arch | params | LUT ms | " + " | ".join(f"inherited, {k} (%)" for k in kinds)
              + " | stand-alone (%) |",
              "|---|---|---|---|" + "---|" * len(kinds) + "---|"]
    for s in subnets:
        scores = top1.get(s["run"], {})
        cells = [f"{scores[k]:.2f}" if k in scores else "–" for k in (*kinds, "stand-alone")]
        lines.append(f"| {s['run'][-2:]} | `{s['name']}` | {s['params'] / 1e6:.3f} M | {s['lut_ms']:.2f} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    walls = [t["wall_s"] for t in record.get("train", {}).values() if "wall_s" in t]
    if walls:  # the last launch of each training (a training paused for other work counts its pause)
        lines += [f"Stand-alone trainings: median **{statistics.median(walls) / 60:.1f} min** each (wall, Ray "
                  f"start-up included; {len(walls)} measured, {sum(walls) / 3600:.1f} h in all).", ""]
    done = sum("stand-alone" in top1.get(s["run"], {}) for s in subnets)
    if done < len(subnets):
        lines += [f"Status: {done} of {len(subnets)} stand-alone trainings evaluated; no correlation yet.", ""]
    def value(v: float | None, ci: list[float] | None) -> str:
        text = "n/a (one side constant)" if v is None else f"{v:.2f}"
        return text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    for kind, c in record.get("correlation", {}).items():
        lines.append(f"- inherited from the {kind} supernet vs stand-alone: Kendall τ "
                     f"**{value(c['kendall_tau'], c['kendall_tau_ci'])}**, Spearman ρ "
                     f"{value(c['spearman_rho'], c['spearman_rho_ci'])} (95 % bootstrap over the {c['subnets']} "
                     "subnets)")
    lines += reading(record)
    teacher = record.get("teacher")
    if teacher:
        lines += ["", f"**A teacher for hard KD (the paper's Table 4).** {teacher['model']}, "
                  f"{teacher['params'] / 1e6:.1f} M params: one AdamW step on 128 images takes "
                  f"{teacher['step_s']['teacher']:.2f} s on {teacher['threads']} threads, "
                  f"×{teacher['ratio_to_peer']:.1f} the peer's ({teacher['step_s']['peer']:.2f} s) in the same "
                  f"interleaved rounds (compute only, no data loading): {TEACHER_EPOCHS} epochs ≈ "
                  f"**{teacher['hours_30_epochs']:.1f} CPU-hours**, before the KD supernet's own 30 epochs, "
                  "which would add one teacher forward per step."]
    return lines + [""]


def reading(record: dict[str, Any], val_images: int = 50_000 - base.TRAIN_IMAGES) -> list[str]:
    """What the correlations say, against the spread of the accuracies and the noise of one of them."""
    top1 = record.get("val_top1", {})
    out = []
    for kind, c in record.get("correlation", {}).items():
        runs = [s["run"] for s in record["subnets"] if {kind, "stand-alone"} <= set(top1.get(s["run"], {}))]
        inherited, alone = [top1[r][kind] for r in runs], [top1[r]["stand-alone"] for r in runs]
        p = statistics.mean(inherited) / 100
        noise = 100 * math.sqrt(p * (1 - p) / val_images)
        ci = c.get("kendall_tau_ci")
        if ci is None:
            verdict = ("τ has no bootstrap interval (every resample ranks alike, or a side is constant): too few "
                       "subnets to bound it")
        elif ci[0] > 0:
            verdict = "the inherited accuracy ranks these subnets as training them alone does"
        elif ci[1] < 0:
            verdict = "the inherited accuracy ranks these subnets against training them alone"
        else:
            verdict = ("τ's interval includes 0: at this precision it cannot tell whether the inherited accuracy "
                       "ranks these subnets as training them alone does")
        out += ["", f"Reading ({kind}): {verdict}. The inherited top-1 of the {len(runs)} subnets spans "
                f"{max(inherited) - min(inherited):.2f} pt and the stand-alone {max(alone) - min(alone):.2f} pt, "
                f"while one accuracy on {val_images:,} images has a standard error of about {noise:.1f} pt: "
                "the weight-shared subnets sit within a few standard errors of each other, so their order is "
                "mostly noise, and a short stand-alone schedule is itself only a proxy for full training."]
    return out


def plot(record: dict[str, Any], path: Path) -> Path | None:
    top1 = record.get("val_top1", {})
    subnets = [s for s in record.get("subnets", []) if "stand-alone" in top1.get(s["run"], {})]
    if not subnets:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    for kind, marker in (("no-KD", "o"), ("KD", "^")):
        points = [(top1[s["run"]][kind], top1[s["run"]]["stand-alone"], s["lut_ms"]) for s in subnets
                  if kind in top1[s["run"]]]
        if points:
            tau = record.get("correlation", {}).get(kind, {}).get("kendall_tau")
            label = f"inherited, {kind} supernet" + (f" (τ {tau:.2f})" if tau is not None else "")
            sc = ax.scatter([p[0] for p in points], [p[1] for p in points], c=[p[2] for p in points],
                            cmap="viridis", marker=marker, label=label)
    fig.colorbar(sc, ax=ax, label="torch-cpu LUT ms")
    ax.set_xlabel("inherited val top-1 (%), 30-epoch supernet")
    ax.set_ylabel(f"stand-alone val top-1 (%), {record['setup']['short_epochs']} epochs")
    ax.set_title("Rank fidelity of the XXS supernet on CIFAR-10")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def write_report(record: dict[str, Any], out: Path, first: dict[str, Any], benchmarks: Path) -> None:
    results_dir = benchmarks.parent / "bench" / "results"
    full = {**record, **base.provenance(first, out, [s["run"] for s in record.get("subnets", [])]),
            "short_schedule": [f"train.epochs={record.get('setup', {}).get('short_epochs')}", *SHORT_SCHEDULE]}
    write_json(results_dir / "rank_fidelity.json", full)
    plot(record, results_dir / "rank_fidelity.png")
    replace_markdown_section(benchmarks, SECTION, "\n".join(report_sections(record)))
    log(f"wrote {benchmarks}, {results_dir / 'rank_fidelity.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = base.follow_up_parser(__doc__)
    parser.add_argument("--subnets", type=int, default=NUM_SUBNETS)
    parser.add_argument("--short-epochs", type=int, default=SHORT_EPOCHS, help="the stand-alone schedule")
    args = parser.parse_args(argv)
    out = (args.out or bench_dir() / "cifar10_result").expanduser().resolve()
    first = trained_result(out)
    settings = Settings(out=out, data_dir=args.data_dir, epochs=args.epochs, pilot_epochs=first["pilot"]["epochs"],
                        threads=args.threads, max_steps=args.max_steps)
    torch.set_num_threads(args.threads)
    record, save = open_record(out / "rank_fidelity.json", args.report_only)
    if not args.report_only:
        recipe = first["train"]["recipe"]
        log(f"rank_fidelity: artifacts in {out}; code {autovit_ray.__file__}")
        check_setup(record, {"subnets": args.subnets, "short_epochs": args.short_epochs})
        archs = pick_subnets(settings, args.subnets, record, save)
        standalone = train_stand_alone(settings, recipe, archs, args.short_epochs, record, save)
        evaluate(settings, recipe, archs, standalone, record, save)
        teacher_cost(settings, first["train"]["adaptation"], record, save)
    write_report(record, out, first, args.benchmarks_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
