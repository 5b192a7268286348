"""Benchmark: beyond the first CIFAR-10 result (issue 14) — distillation, stand-alone retraining, Table 6.

One resumable command runs every stage in order, skips what is done, and prints progress with an ETA:

    nohup .venv/bin/python bench/cifar10_beyond.py >> ~/.cache/autovit-ray/bench/cifar10_beyond.log 2>&1 &
    .venv/bin/python bench/cifar10_beyond.py --report-only   # BENCHMARKS.md section, JSON and plot again

It builds on the finished CIFAR-10 result (bench/cifar10_result.py) and works in its artifact directory
(``$AUTOVIT_BENCH_DIR/cifar10_result``, default ``~/.cache/autovit-ray/bench``): the same recipe, peer,
latency tables, budgets, selection rule, splits, data path (timm's PIL pipeline) and precision (fp32).
Its own bookkeeping is ``beyond.json`` there. Run it from a pinned copy of the code, like the first.

1. ``kd-train`` (paper Section 5.1): the XXS supernet again, 30 epochs, with in-place distillation —
   each step's sampled subnet learns from the labels and from the largest subnet's soft predictions
   (``kd.kind soft``, ``kd.inplace true``, alpha 0.5, tau 1), the largest running without gradient.
   The sampler stays uniform (Algorithm 1: one subnet's gradient per step, like the no-KD supernet), so
   the largest subnet trains on the labels only when it is sampled; training it every step (BigNAS's
   sandwich) would double the step's cost. Soft, not hard, KD: this teacher is only a little better than
   its students, so its argmax labels would mostly repeat its own mistakes; its soft predictions carry
   the class similarities that in-place distillation relies on.
2. ``kd-search`` and ``kd-selection``: the same coarse-to-fine search and selection by measured latency
   as the first result, at both budgets (latency <= 1.0x and 0.8x the peer's measured, params <= 1.4x).
3. ``standalone``: the subnet the first result chose at the peer's latency, trained from scratch alone
   through the product's ``python -m autovit_ray.train --arch`` with the peer's recipe and epochs.
4. ``compare``: full validation and test top-1 of the peer; the chosen subnet inherited from the no-KD
   supernet, inherited from the KD supernet, and stand-alone; the KD search's chosen subnets; the
   smallest and largest of both supernets; paired test differences (bootstrap over the 10k images).
5. ``strategies``: the paper's Table 6 (bench/search_strategies.py, its own section).
6. ``rank``: part 4, inherited vs stand-alone ranking of 12 subnets and a teacher's cost
   (bench/rank_fidelity.py, its own section).

Bad input: checkpoints of another recipe, split, distillation setting or arch are refused (``Mismatch``);
a missing or unfinished first result stops the run with what to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cifar10_result as base
import torch
from cifar10_result import Mismatch, Settings
from common import ROOT, bench_dir, log, open_record, public_path, readable_json, save_figure, write_json
from torch import nn

import autovit_ray
from autovit_ray.checkpoint import list_checkpoints, read_meta
from autovit_ray.compare import measure_macs
from autovit_ray.data import Loaders, build_loaders
from autovit_ray.evaluation import evaluate
from autovit_ray.io import atomic_write_text, replace_markdown_section
from autovit_ray.plan import count_macs
from autovit_ray.space import Arch, load_space

KD_RUN = "cifar10-xxs-kd"
KD_OVERRIDES = ("kd.kind=soft", "kd.inplace=true", "kd.alpha=0.5", "kd.tau=1.0")
STANDALONE_RUN = "standalone-1.0x"
STANDALONE_FACTOR = 1.0  # the chosen subnet at the peer's latency is retrained
SECTION = "## Distillation and stand-alone retraining on CIFAR-10 (issue 14, parts 1-2)"
COMMAND = "nohup .venv/bin/python bench/cifar10_beyond.py >> ~/.cache/autovit-ray/bench/cifar10_beyond.log 2>&1 &"


def kd_search_name(factor: float) -> str:
    return f"kd-{base.search_name(factor)}"


def first_result(out: Path) -> dict[str, Any]:
    """The finished first result's bookkeeping (results.json); SystemExit saying what to run if not."""
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if "headline" not in results:
        raise SystemExit(f"{path} has no finished CIFAR-10 result (no 'headline'): run bench/cifar10_result.py "
                         "to its end first; this benchmark reuses its peer, tables, budgets and chosen subnet")
    return results


def chosen_arch(results: dict[str, Any], factor: float) -> Arch:
    chosen = results["selection"][base.search_name(factor)]["chosen"]
    if chosen is None:
        raise SystemExit(f"the first result chose no subnet at {factor}x the peer's latency: nothing to retrain")
    return Arch.from_dict(chosen)


# ---------------------------------------------------------------------------------------------------
# Trainings through the product's CLI, chunk epochs per call


def train_run(settings: Settings, recipe: str, run: str, extra: tuple[str, ...], record: dict[str, Any],
              save: Callable[[], None], chunk: int, arch_file: Path | None = None,
              check: Callable[[dict[str, Any], Path], None] | None = None) -> None:
    """Advance experiment `run` to settings.epochs, `chunk` epochs per CLI call; record each epoch's
    metrics and the wall time in `record`. `check` also vets the newest checkpoint's meta."""
    cfg = settings.config(recipe, extra)
    start, epochs_run = time.time(), 0
    for until in range(chunk, settings.epochs + chunk, chunk):
        until = min(until, settings.epochs)
        found = list_checkpoints(settings.out / run, base.SUPERNET)
        done = 0
        if found:
            meta = read_meta(found[-1])
            base.check_supernet_meta(meta, cfg, found[-1])
            if check is not None:
                check(meta, found[-1])
            done = int(meta["epoch"])
        if done < until:
            log(f"{run}: training epochs {done + 1}-{until}")
            t0 = time.time()
            base.advance_supernet(settings, recipe, until, run, extra,
                                  arch=str(arch_file) if arch_file is not None else None)
            record["wall_s"] = record.get("wall_s", 0.0) + time.time() - t0
            epochs_run += until - done
            eta = (settings.epochs - until) * (time.time() - start) / epochs_run / 3600
            log(f"{run}: {until}/{settings.epochs} epochs; ETA of this training {eta:.1f} h")
        for path in list_checkpoints(settings.out / run, base.SUPERNET):
            meta = read_meta(path)
            record.setdefault("epochs", {})[str(meta["epoch"])] = meta.get("metrics", {})
        save()


def standalone_check(arch: Arch) -> Callable[[dict[str, Any], Path], None]:
    expected = load_space(base.SUPERNET, input_profile=base.INPUT_PROFILE).restricted_to(arch).fingerprint()

    def check(meta: dict[str, Any], path: Path) -> None:
        if meta["space"].get("fingerprint") != expected:
            raise Mismatch(f"checkpoint {path} trained another arch than {arch} (space fingerprint "
                           f"{meta['space'].get('fingerprint')}, expected {expected}); move "
                           f"{path.parents[2]} away to retrain")
    return check


# ---------------------------------------------------------------------------------------------------
# Comparison on the full validation and test splits


def standalone_model(checkpoint: Path, arch: Arch) -> nn.Module:
    """The stand-alone model with its own trained BatchNorm statistics (it was the only subnet)."""
    from autovit_ray.checkpoint import load_supernet

    supernet, _, _ = load_supernet(checkpoint)
    return supernet.get_active_subnet(arch).eval()


def run_compare(settings: Settings, first: dict[str, Any], record: dict[str, Any], checkpoints: dict[str, Path],
                save: Callable[[], None]) -> None:
    """Every model of the comparison: val / test top-1, params, MACs, LUT latency, paired test
    differences; the distinct archs measured beside the peer (torch-cpu wall clock, interleaved)."""
    if "compare" in record:
        return
    from autovit_ray.latency import LatencyTable

    space = load_space(base.SUPERNET, input_profile=base.INPUT_PROFILE)
    adaptation = first["train"]["adaptation"]
    loaders: Loaders = build_loaders(base.config_from_saved(read_meta(checkpoints["no-KD"])["config"]).data)
    table = LatencyTable.load(base.lut_path(settings, base.SEARCH_BACKEND), space=space, backend=base.SEARCH_BACKEND)
    retrained = chosen_arch(first, STANDALONE_FACTOR)
    entries: list[tuple[str, Arch | None, Callable[[], nn.Module]]] = [
        ("peer", None, lambda: base.load_peer(settings, adaptation))]
    for label, arch in (("smallest", space.smallest()), ("largest", space.largest())):
        for kind in ("no-KD", "KD"):
            entries.append((f"{label}, {kind} supernet", arch,
                            lambda a=arch, k=kind: base.subnet_of(checkpoints[k], a, loaders)))
    pairs: dict[str, tuple[str, str]] = {}  # name: (label a, label b) of a paired test difference
    for factor in base.LATENCY_FACTORS:
        kinds = {"no-KD": first["selection"][base.search_name(factor)]["chosen"],
                 "KD": record["selection"][kd_search_name(factor)]["chosen"]}
        for kind, chosen in kinds.items():
            if chosen is not None:
                arch = Arch.from_dict(chosen)
                entries.append((f"chosen {factor:.1f}x, {kind} search and supernet", arch,
                                lambda a=arch, k=kind: base.subnet_of(checkpoints[k], a, loaders)))
        if None not in kinds.values():
            pairs[f"chosen {factor:.1f}x: KD vs no-KD"] = (f"chosen {factor:.1f}x, KD search and supernet",
                                                           f"chosen {factor:.1f}x, no-KD search and supernet")
    inherited = f"chosen {STANDALONE_FACTOR:.1f}x, no-KD search and supernet"
    from_kd, alone = (f"chosen {STANDALONE_FACTOR:.1f}x (no-KD search), {where}"
                      for where in ("inherited from the KD supernet", "stand-alone"))
    entries += [(from_kd, retrained, lambda: base.subnet_of(checkpoints["KD"], retrained, loaders)),
                (alone, retrained, lambda: standalone_model(checkpoints["stand-alone"], retrained))]
    pairs.update({"stand-alone vs inherited (no-KD supernet)": (alone, inherited),
                  "stand-alone vs inherited (KD supernet)": (alone, from_kd),
                  "same arch inherited: KD vs no-KD supernet": (from_kd, inherited)})
    rows: dict[str, dict[str, Any]] = {}
    correct: dict[str, list[bool]] = {}
    measured_models: dict[str, nn.Module] = {}  # one model per distinct arch (and the peer) for latency
    for label, arch, build in entries:
        model = build()
        row: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
        if arch is None:
            row["macs"] = measure_macs(model, base.RESOLUTION)
        else:
            row.update(arch=arch.to_dict(), name=str(arch), macs=count_macs(arch, 10, space),
                       lut_ms=table.predict_latency(arch))
        vectors = {split: evaluate(model, getattr(loaders, split), per_image=True).correct_per_image
                   for split in ("val", "test")}
        for split, vector in vectors.items():
            row[f"{split}_top1"] = 100.0 * sum(vector) / len(vector)
        correct[label] = vectors["test"]
        measured_models.setdefault("peer" if arch is None else str(arch), model)
        rows[label] = row
        log(f"compare: {label}: val {row['val_top1']:.2f}, test {row['test_top1']:.2f}")
    for label in rows:
        if label != "peer":
            rows[label]["test_vs_peer"] = base.bootstrap_difference(correct[label], correct["peer"])
    differences = {name: base.bootstrap_difference(correct[a], correct[b]) for name, (a, b) in pairs.items()}
    keys = list(measured_models)
    log(f"compare: measuring {len(keys)} distinct models on torch-cpu (wall clock, interleaved)")
    stats = base.measure([measured_models[k] for k in keys], base.SEARCH_BACKEND, "wall", rounds=40, seed=5)
    latency = {k: {**s, "ratio": s["median_ms"] / stats[0]["median_ms"]} for k, s in zip(keys, stats)}
    for row in rows.values():
        row["measured"] = latency[row.get("name", "peer")]
    record["compare"] = {"rows": rows, "differences": differences}
    save()


# ---------------------------------------------------------------------------------------------------
# Report


def _f(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _delta(d: dict[str, Any] | None) -> str:
    return "–" if not d else f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def reading(compare: dict[str, Any]) -> str:
    """The comparison in words, from its paired test intervals (so other numbers read as they are)."""
    rows, diffs = compare["rows"], compare["differences"]

    def pp(d: dict[str, Any]) -> str:
        return f"{d['difference']:+.2f} pp [{d['low']:+.2f}, {d['high']:+.2f}]"

    parts = []
    for factor in base.LATENCY_FACTORS:
        row = rows.get(f"chosen {factor:.1f}x, KD search and supernet")
        if not row:
            parts.append(f"At ≤ {factor:.1f}× the peer's latency the KD search chose no subnet.")
            continue
        text = (f"At ≤ {factor:.1f}× the peer's latency the KD search's chosen subnet {base.verdict(row['test_vs_peer'])} "
                f"the peer ({pp(row['test_vs_peer'])}, at {row['measured']['ratio']:.2f}× its measured latency)")
        d = diffs.get(f"chosen {factor:.1f}x: KD vs no-KD")
        if d:
            text += f"; compared with the no-KD search's choice it {base.verdict(d)} that subnet ({pp(d)})"
        parts.append(text + ".")
    same = diffs.get("same arch inherited: KD vs no-KD supernet")
    if same:
        parts.append(f"The same arch (the no-KD choice at 1.0×) inherited from the KD supernet "
                     f"{base.verdict(same, 'beats', 'loses to')} its no-KD inheritance ({pp(same)}).")
    alone = diffs.get("stand-alone vs inherited (no-KD supernet)")
    alone_row = next((r for label, r in rows.items() if label.endswith("stand-alone")), None)
    if alone and alone_row:
        parts.append(f"Trained alone with the peer's recipe and epochs, that arch "
                     f"{base.verdict(alone, 'beats', 'loses to')} its no-KD inheritance ({pp(alone)}) and "
                     f"{base.verdict(alone_row['test_vs_peer'])} the peer ({pp(alone_row['test_vs_peer'])}).")
    return ("**Reading.** " + " ".join(parts) + " Paired bootstraps over the same 10k test images; one training "
            "seed per model, so the seed-to-seed spread comes on top.")


def report_sections(record: dict[str, Any], first: dict[str, Any], epochs: int) -> list[str]:
    lines = [SECTION, "",
             f"Command (resumable; rerun it to continue): `{COMMAND}`, from a pinned worktree, after the CIFAR-10 "
             "result; artifacts beside that result's (`$AUTOVIT_BENCH_DIR/cifar10_result`, bookkeeping in "
             "`beyond.json`). `.venv/bin/python bench/cifar10_beyond.py --report-only` rewrites this section, "
             "`bench/results/cifar10_beyond.json` and the plot. Same recipe ("
             f"{first.get('train', {}).get('recipe')}), splits, data path (timm PIL), precision (fp32), batch, "
             "seed 0 and budgets as the first result; one training seed per model.", "",
             base.code_line(record), "",
             "- **Distillation**: in-place, soft (alpha 0.5, tau 1): each step's uniformly sampled subnet "
             "learns from the labels and from the largest subnet's predictions (a no-gradient forward); the "
             "largest trains on the labels only when sampled. No teacher trained here, so the peer gets no "
             "distillation either (self-distillation from its own earlier checkpoint would cost another "
             "peer training, about 1.3 h; not done).",
             "- **Stand-alone**: the first result's chosen subnet at the peer's latency, from scratch with the "
             "peer's recipe and epochs (`python -m autovit_ray.train --arch`), its own BatchNorm statistics.", ""]
    for run, title in ((KD_RUN, "KD supernet"), (STANDALONE_RUN, "stand-alone subnet")):
        entry = record.get("train", {}).get(run)
        if entry:
            done = max((int(e) for e in entry.get("epochs", {})), default=0)
            lines.append(f"- {title}: {done}/{epochs} epochs"
                         + (f", {entry['wall_s'] / 3600:.2f} h of training calls" if entry.get("wall_s") else "")
                         + (" — in progress, numbers partial." if done < epochs else "."))
    lines.append("")
    kd_curve = record.get("train", {}).get(KD_RUN, {}).get("epochs", {})
    if kd_curve:
        plain = first["train"]["supernet"]
        alone = record.get("train", {}).get(STANDALONE_RUN, {}).get("epochs", {})
        lines += ["Per-epoch validation curve (1,280 validation images, BN recalibrated per subnet):", "",
                  "| epoch | no-KD smallest | KD smallest | no-KD largest | KD largest | no-KD random mean | "
                  "KD random mean | stand-alone | peer |", "|---|---|---|---|---|---|---|---|---|"]
        peer = first["train"].get("peer", [])
        for e in range(1, max(int(k) for k in kd_curve) + 1):
            p, k, a = plain.get(str(e), {}), kd_curve.get(str(e), {}), alone.get(str(e), {})
            lines.append(f"| {e} | {_f(p.get('val_top1_smallest'))} | {_f(k.get('val_top1_smallest'))} | "
                         f"{_f(p.get('val_top1_largest'))} | {_f(k.get('val_top1_largest'))} | "
                         f"{_f(p.get('val_top1_random_mean'))} | {_f(k.get('val_top1_random_mean'))} | "
                         f"{_f(a.get('val_top1_largest'))} | "
                         f"{_f(peer[e - 1].get('val_top1_curve') if e <= len(peer) else None)} |")
        lines.append("")
    for name, sel in record.get("selection", {}).items():
        chosen = next((r for r in sel["candidates"] if r["meets"]), None)
        lines.append(f"- Selection {name}: {sum(r['meets'] for r in sel['candidates'])} of "
                     f"{len(sel['candidates'])} candidates meet {sel['limit_ms']:.3f} ms measured; chosen "
                     + (f"`{chosen['name']}` (val {chosen['val_top1']:.2f})" if chosen else "none"))
    compare = record.get("compare")
    if not compare:
        lines += ["", "Status: in progress; the comparison (full validation and test splits, paired test "
                  "intervals, measured latency) follows when the stand-alone retraining has finished.", ""]
    else:
        lines += ["", "Full 5k validation and 10k test sets; latency torch-cpu, batch 1, 1 thread, wall clock, "
                  "40 interleaved rounds (median, p10–p90), × the peer in the same run; Δ = paired difference on "
                  "the same 10k test images with a 95 % bootstrap interval:", "",
                  "| model | val top-1 | test top-1 | Δ test vs peer (pp) | params | MMACs | torch-cpu ms | × peer |",
                  "|---|---|---|---|---|---|---|---|"]
        for label, row in compare["rows"].items():
            m = row["measured"]
            lines.append(f"| {label} | {row['val_top1']:.2f} | {row['test_top1']:.2f} | "
                         f"{_delta(row.get('test_vs_peer'))} | {row['params'] / 1e6:.3f} M | {row['macs'] / 1e6:.1f} | "
                         f"{m['median_ms']:.3f} ({m['p10_ms']:.3f}–{m['p90_ms']:.3f}) | {m['ratio']:.2f} |")
        lines += ["", "| paired test difference | Δ (pp) | only the first right | only the second right |",
                  "|---|---|---|---|"]
        for name, d in compare["differences"].items():
            lines.append(f"| {name} | {_delta(d)} | {d['a_only']} | {d['b_only']} |")
        lines += ["", "![distillation and stand-alone retraining](bench/results/cifar10_beyond.png)", "",
                  reading(compare), ""]
    return lines


def plot(record: dict[str, Any], first: dict[str, Any], out: Path, path: Path) -> Path | None:
    """Left: validation curves per epoch. Right: every candidate of the 1.0x searches (validation top-1
    vs LUT latency), no-KD and KD supernets, the peer marked at its table latency."""
    if "compare" not in record:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    curves = {"no-KD supernet": first["train"]["supernet"], "KD supernet": record["train"][KD_RUN]["epochs"]}
    for label, epochs in curves.items():
        xs = sorted(int(e) for e in epochs)
        for key, style in (("val_top1_largest", "-"), ("val_top1_smallest", "--")):
            left.plot(xs, [epochs[str(e)][key] for e in xs], style, label=f"{label}, {key.rsplit('_', 1)[1]}")
    alone = record["train"].get(STANDALONE_RUN, {}).get("epochs", {})
    xs = sorted(int(e) for e in alone)
    left.plot(xs, [alone[str(e)]["val_top1_largest"] for e in xs], "-", color="black", label="stand-alone")
    peer = first["train"]["peer"]
    left.plot(range(1, len(peer) + 1), [p["val_top1_curve"] for p in peer], ":", color="black", label="peer")
    left.set(xlabel="epoch", ylabel="validation top-1 (%, 1,280 images)", title="training curves")
    left.legend(fontsize=7)
    for label, name in (("no-KD", base.search_name(1.0)), ("KD", kd_search_name(1.0))):
        found_path = out / "search" / name / "results.json"
        if found_path.is_file():
            ok = [e for e in json.loads(found_path.read_text()).get("evaluated", []) if e["fitness"] is not None]
            right.scatter([e["latency"] for e in ok], [e["fitness"] for e in ok], s=6, alpha=0.3,
                          label=f"{label} supernet: {len(ok)} candidates")
    peer_row = record["compare"]["rows"]["peer"]
    right.scatter([first["budgets"]["peer_lut_ms"]], [peer_row["val_top1"]], marker="*", s=180, color="black",
                  label="peer (timm mobilevit_xxs)")
    right.set(xlabel="LUT-predicted latency, torch-cpu (ms)", ylabel="validation top-1 (%)",
              title="1.0x searches: every evaluated candidate")
    right.legend(fontsize=7)
    return save_figure(fig, path)


def write_report(record: dict[str, Any], first: dict[str, Any], out: Path, epochs: int, benchmarks: Path) -> None:
    results_dir = benchmarks.parent / "bench" / "results"
    full = {**record, **base.provenance(first, out, (KD_RUN, STANDALONE_RUN)), "kd_overrides": list(KD_OVERRIDES)}
    write_json(results_dir / "cifar10_beyond.json", full)
    plot(record, first, out, results_dir / "cifar10_beyond.png")
    replace_markdown_section(benchmarks, SECTION, "\n".join(report_sections(record, first, epochs)))
    log(f"wrote {benchmarks}, {results_dir / 'cifar10_beyond.json'}")


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = base.follow_up_parser(__doc__)
    parser.add_argument("--chunk", type=int, default=5, help="epochs per training call")
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--strategies-args", default="", help="extra arguments of bench/search_strategies.py "
                                                              "(smoke runs)")
    parser.add_argument("--rank-args", default="", help="extra arguments of bench/rank_fidelity.py (smoke runs)")
    parser.add_argument("--stop-after", choices=("kd-train", "compare"), default=None)
    args = parser.parse_args(argv)
    out = (args.out or bench_dir() / "cifar10_result").expanduser().resolve()
    first = first_result(out)
    settings = Settings(out=out, data_dir=args.data_dir, epochs=args.epochs, pilot_epochs=first["pilot"]["epochs"],
                        threads=args.threads, population=args.population, generations=args.generations,
                        max_steps=args.max_steps)
    torch.set_num_threads(args.threads)
    record, save = open_record(out / "beyond.json", args.report_only)
    if args.report_only:
        write_report(record, first, out, args.epochs, args.benchmarks_file)
        return 0
    recipe, adaptation = first["train"]["recipe"], first["train"]["adaptation"]
    log(f"cifar10_beyond: artifacts in {out}; code {autovit_ray.__file__}")
    trains = record.setdefault("train", {})
    train_run(settings, recipe, KD_RUN, KD_OVERRIDES, trains.setdefault(KD_RUN, {}), save, args.chunk)
    if args.stop_after == "kd-train":
        return 0
    kd_checkpoint = base.final_supernet(settings, settings.config(recipe, KD_OVERRIDES), KD_RUN)
    budgets = first["budgets"]
    searches = record.setdefault("searches", {})
    selection = record.setdefault("selection", {})
    loaders = build_loaders(settings.config(recipe).data)
    for factor in base.LATENCY_FACTORS:
        name = kd_search_name(factor)
        path = out / "search" / name / "results.json"
        if not (name in searches and readable_json(path)):
            start = time.time()
            base.search(settings, kd_checkpoint, name, budgets["by_factor"][str(factor)]["latency_budget_ms"],
                        budgets["params_budget"])
            searches[name] = {"factor": factor, "wall_s": time.time() - start, "results": public_path(path)}
            save()
        if name not in selection:
            selection[name] = base.select_by_measured_latency(settings, kd_checkpoint, adaptation, path, factor,
                                                              loaders)
            save()
    retrained = chosen_arch(first, STANDALONE_FACTOR)
    arch_file = out / f"{STANDALONE_RUN}.arch.json"
    atomic_write_text(arch_file, retrained.to_json())
    train_run(settings, recipe, STANDALONE_RUN, (), trains.setdefault(STANDALONE_RUN, {}), save, args.chunk,
              arch_file=arch_file, check=standalone_check(retrained))
    standalone = base.final_supernet(settings, settings.config(recipe), STANDALONE_RUN)
    standalone_check(retrained)(read_meta(standalone), standalone)
    checkpoints = {"no-KD": base.final_supernet(settings, settings.config(recipe)), "KD": kd_checkpoint,
                   "stand-alone": standalone}
    run_compare(settings, first, record, checkpoints, save)
    write_report(record, first, out, args.epochs, args.benchmarks_file)
    if args.stop_after == "compare":
        return 0
    log("strategies: bench/search_strategies.py (Table 6)")
    results_dir = args.benchmarks_file.parent / "bench" / "results"
    rc = subprocess.call([sys.executable, str(ROOT / "bench" / "search_strategies.py"),
                          "--benchmarks-file", str(args.benchmarks_file),
                          "--results", str(results_dir / "search_strategies.json"),
                          *args.strategies_args.split()], cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"bench/search_strategies.py failed (exit {rc})")
    log("rank fidelity: bench/rank_fidelity.py (part 4)")
    rc = subprocess.call([sys.executable, str(ROOT / "bench" / "rank_fidelity.py"), "--out", str(out),
                          "--data-dir", args.data_dir, "--epochs", str(args.epochs),
                          "--benchmarks-file", str(args.benchmarks_file), *args.rank_args.split()], cwd=ROOT)
    if rc != 0:
        raise RuntimeError(f"bench/rank_fidelity.py failed (exit {rc})")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
