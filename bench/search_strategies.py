"""The paper's Table 6 on CIFAR-10 (issue 14, part 3): coarse-to-fine vs plain evolution vs random search
at equal budgets, on the trained no-KD XXS supernet of the CIFAR-10 result (bench/cifar10_result.py).

    .venv/bin/python bench/search_strategies.py                  # resumable: rerun to continue
    .venv/bin/python bench/search_strategies.py --report-only    # section + plot again from the JSON
    .venv/bin/python bench/search_strategies.py --checkpoint outputs/digits-demo --supernet xxs \\
        --lut outputs/digits-demo/luts/xxs.parquet --params-budget 1.6M --latency-budget-ms 6 \\
        --evaluations 12 --seeds 0 --out /tmp/strategies-smoke --benchmarks-file /tmp/B.md   # smoke run

bench/cifar10_claim.py (issue 31) runs it again on its own supernet and budgets (its `table6` stage, with
its own --out, --results and --benchmarks-file).

Every (strategy, seed) is one run of the product's `python -m autovit_ray.search` with the same
budgets (latency <= the peer's measured latency in table ms, params <= 1.4x the peer's: the CIFAR-10
result's `budgets`), the same evaluation harness and `--max-evaluations` candidates (default 300, in
generations of 50):

- selection reads a fixed half of the validation split (`--val-half 0`: 2,500 of the 5,000 held-out
  images, the same for all runs); each run's winner is re-scored on the other half and on the test
  set, so the reported accuracy is not the maximum that selected it;
- all runs share one evaluation cache (`--eval-cache`): an arch is evaluated once, whichever run
  proposes it first; a cache hit still counts as one of the run's evaluations. Each run reports its
  unique evaluations (the actors' work), cache hits, candidates proposed (including those over the
  budget or repeated) and wall time.

Best-so-far validation top-1 against evaluations (median and range over seeds) is plotted per strategy;
the section gives the evaluations coarse-to-fine needs to reach plain evolution's final best (median
over seeds, with a bootstrap interval resampling the seeds of both), and says whether the paper's
claim (the same or better accuracy at well under half the search cost) holds. Artifacts under
`$AUTOVIT_BENCH_DIR/search_strategies` (default ~/.cache/autovit-ray/bench); writes its section of
BENCHMARKS.md, bench/results/search_strategies.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cifar10_result as c10
from common import (
    ROOT,
    bench_dir,
    environment,
    log,
    mlflow_env,
    note_code,
    public_paths,
    readable_json,
    run_cli,
    write_json,
)

from autovit_ray.io import atomic_write_text, replace_markdown_section
from autovit_ray.search.config import SearchConfig

HEADING = "## Search strategies at equal budgets: the paper's Table 6 on CIFAR-10 (issue 14)"
STRATEGIES = ("coarse-to-fine", "evolution", "random")
POPULATION = 50
RESULT_JSON = ROOT / "bench" / "results" / "search_strategies.json"
RESULT_PNG = ROOT / "bench" / "results" / "search_strategies.png"


def cifar10_results() -> dict[str, Any]:
    path = bench_dir() / "cifar10_result" / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def cifar10_inputs() -> dict[str, Any]:
    """Checkpoint, LUT and budgets of the finished CIFAR-10 result (bench/cifar10_result.py)."""
    from autovit_ray.checkpoint import find_checkpoint

    out = bench_dir() / "cifar10_result"
    results = cifar10_results()
    if "budgets" not in results:
        raise SystemExit(f"{out / 'results.json'} has no budgets yet: finish bench/cifar10_result.py first (its budgets "
                         "stage), or pass --checkpoint, --lut, --params-budget and --latency-budget-ms")
    budgets = results["budgets"]
    return {"checkpoint": str(find_checkpoint(out / c10.SUPERNET_RUN, c10.SUPERNET, final=True)),
            "supernet": c10.SUPERNET,
            "lut": str(out / "luts" / f"{c10.SUPERNET}_{c10.RESOLUTION}_{c10.SEARCH_BACKEND}.parquet"),
            "params_budget": float(budgets["params_budget"]),
            "latency_budget_ms": float(budgets["by_factor"]["1.0"]["latency_budget_ms"])}


def provenance(inputs: dict[str, Any]) -> dict[str, Any]:
    """The first CIFAR-10 result's provenance fields when these runs search its supernet; else the
    environment alone (another checkpoint: a smoke run, or the claim's supernet)."""
    first = cifar10_results()
    theirs = Path(inputs["checkpoint"]).is_relative_to(bench_dir() / "cifar10_result")  # else: bench/cifar10_claim.py's
    if theirs and "train" in first and "budgets" in first and inputs == cifar10_inputs():
        return {**c10.provenance(first, bench_dir() / "cifar10_result", (c10.SUPERNET_RUN,)),
                "supernet": supernet_summary(first)}
    return {"environment": environment()}


def supernet_summary(first: dict[str, Any]) -> dict[str, Any]:
    """The searched supernet: its epochs, last per-epoch validation (1,280 images), training time and the
    code of the runs that trained it (the first result's stages may have been regenerated since)."""
    epochs = sorted(first["train"]["supernet"], key=int)
    return {"epochs": int(epochs[-1]), "final_val": first["train"]["supernet"][epochs[-1]],
            "train_wall_h": first["train"].get("supernet_wall_s", 0.0) / 3600,
            "code_runs": first.get("code_runs", [])}


def search_config(inputs: dict[str, Any], strategy: str, seed: int, evaluations: int, out: Path) -> SearchConfig:
    population = min(POPULATION, evaluations)
    return SearchConfig(name=f"{strategy}-seed{seed}", checkpoint=inputs["checkpoint"], supernet=inputs["supernet"],
                        lut=inputs["lut"], params_budget=inputs["params_budget"],
                        latency_budget_ms=inputs["latency_budget_ms"], strategy=strategy, seed=seed,
                        max_evaluations=evaluations, population=population,
                        generations=math.ceil(evaluations / population), val_half=0,
                        eval_cache=str(out / "eval_cache.sqlite"), evaluators=2, top_k=1, export_formats=(),
                        no_register=True, output_dir=str(out))


def results_path(out: Path, strategy: str, seed: int) -> Path:
    return out / "search" / f"{strategy}-seed{seed}" / "results.json"


def run_one(inputs: dict[str, Any], strategy: str, seed: int, evaluations: int, out: Path) -> dict[str, Any]:
    """One search (resumed if interrupted); its record for the report."""
    name = f"{strategy}-seed{seed}"
    path = results_path(out, strategy, seed)
    wall_path = out / "search" / name / "bench_wall_s.json"
    if not path.is_file():
        cmd = ["autovit_ray.search", *search_config(inputs, strategy, seed, evaluations, out).to_argv()]
        log(f"{name}: {sys.executable} -m {' '.join(cmd)}")
        start = time.time()
        run_cli(cmd, out / f"{name}.log", mlflow_env(out))
        # the wall time of the run that finished it (a resumed search: of its last part)
        atomic_write_text(wall_path, json.dumps(time.time() - start))
    results = json.loads(path.read_text())
    best = results["best"][0]
    curve, running = [], -math.inf
    for entry in results["evaluated"]:
        if entry.get("fitness") is not None:
            running = max(running, float(entry["fitness"]))
        curve.append(running if math.isfinite(running) else None)
    return {"strategy": strategy, "seed": seed, "evaluations": results["evaluations"],
            "best_val_half": best["val_top1"], "best_val_other_half": best.get("val_other_top1"),
            "best_test": best["test_top1"], "best_arch": best["name"], "best_params": best["params"],
            "best_latency_ms": best["latency_ms"], "curve": curve,
            "actor_evaluations": results.get("actor_evaluations"), "cache_hits": results.get("cache_hits"),
            "candidates": {k.removeprefix("candidates_"): v for k, v in results.items() if k.startswith("candidates_")},
            "wall_s": json.loads(wall_path.read_text()) if wall_path.is_file() else None}


def evaluations_to_reach(curve: list[float | None], target: float) -> int | None:
    """1-based count of evaluations after which the best so far is >= target (None: never)."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= target), None)


def reach_statistics(runs: list[dict[str, Any]], resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Evaluations coarse-to-fine needs to reach plain evolution's final best: the median over its seeds
    against the median of evolution's final bests, and a bootstrap interval resampling both seed sets
    (with 3 seeds a side it is about the range of the three, not a 95 % interval). A run that never
    reaches it counts as its whole budget plus one (so the median says 'not reached'). `claim_holds`:
    the whole interval, not only the median, within half the budget, at evolution's accuracy."""
    c2f = [r for r in runs if r["strategy"] == "coarse-to-fine"]
    evo = [r for r in runs if r["strategy"] == "evolution"]
    if not c2f or not evo:
        return {}
    budget = max(len(r["curve"]) for r in c2f)

    def needed(c2f_runs: list[dict[str, Any]], evo_runs: list[dict[str, Any]]) -> float:
        target = statistics.median(r["best_val_half"] for r in evo_runs)
        counts = [evaluations_to_reach(r["curve"], target) or budget + 1 for r in c2f_runs]
        return statistics.median(counts)

    rng = random.Random(seed)
    draws = sorted(needed([rng.choice(c2f) for _ in c2f], [rng.choice(evo) for _ in evo]) for _ in range(resamples))
    point = needed(c2f, evo)
    interval = [draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]]
    return {"target_val_half": statistics.median(r["best_val_half"] for r in evo), "evaluations": point,
            "interval_95": interval, "seeds": [len(c2f), len(evo)], "budget": budget, "not_reached_means": budget + 1,
            "claim_holds": interval[1] <= budget / 2 and statistics.median(r["best_val_half"] for r in c2f)
            >= statistics.median(r["best_val_half"] for r in evo)}


def strategy_summary(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown rows per strategy: the winners' accuracies (median and range over seeds) on the half that
    selected them, on the other half and on the test set, and the median search cost."""
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    rows = ["| strategy | seeds | winner, val half 0 (selected on) | winner, val half 1 | winner, test | unique "
            "evaluations | wall min |", "|---|---|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy]
        if not mine:
            continue
        other = [r["best_val_other_half"] for r in mine if r["best_val_other_half"] is not None]
        walls = [r["wall_s"] / 60 for r in mine if r["wall_s"]]
        rows.append(f"| {strategy} | {len(mine)} | {spread([r['best_val_half'] for r in mine])} | "
                    f"{spread(other) if other else 'n/a'} | {spread([r['best_test'] for r in mine])} | "
                    f"{statistics.median(r['actor_evaluations'] for r in mine):g} | "
                    f"{f'{statistics.median(walls):.1f}' if walls else 'n/a'} |")
    return rows


def held_out_reading(runs: list[dict[str, Any]]) -> str:
    """How far apart the strategies' winners are on images that did not select them (medians over seeds)."""
    def medians(key: str) -> dict[str, float]:
        found = {st: [r[key] for r in runs if r["strategy"] == st and r[key] is not None] for st in STRATEGIES}
        return {st: statistics.median(v) for st, v in found.items() if v}

    test, other = medians("best_test"), medians("best_val_other_half")
    if len(test) < 2:
        return ""
    return (f"On images that did not select them the winners' medians lie within "
            f"{max(test.values()) - min(test.values()):.2f} points of each other on the test set ("
            + ", ".join(f"{k} {v:.2f}" for k, v in test.items()) + ") and within "
            f"{max(other.values()) - min(other.values()):.2f} on validation half 1 ("
            + ", ".join(f"{k} {v:.2f}" for k, v in other.items()) + ").")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strategy, color in zip(STRATEGIES, ("tab:blue", "tab:orange", "tab:gray")):
        curves = [r["curve"] for r in result["runs"] if r["strategy"] == strategy]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        xs = list(range(1, n + 1))
        columns = [[c[i] for c in curves if c[i] is not None] for i in range(n)]
        keep = [i for i, col in enumerate(columns) if col]
        ax.plot([xs[i] for i in keep], [statistics.median(columns[i]) for i in keep], color=color,
                label=f"{strategy} (median of {len(curves)} seeds)")
        ax.fill_between([xs[i] for i in keep], [min(columns[i]) for i in keep], [max(columns[i]) for i in keep],
                        color=color, alpha=0.2)
    reach = result.get("reach") or {}
    if reach:
        ax.axhline(reach["target_val_half"], color="tab:orange", ls=":", lw=1, label="evolution's final best (median)")
    ax.set_xlabel("evaluations (candidates evaluated, cache hits included)")
    ax.set_ylabel("best validation top-1 so far (%, half 0)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def supernet_lines(supernet: dict[str, Any] | None) -> list[str]:
    if not supernet:
        return []
    final = supernet["final_val"]
    trained_by = c10.code_line(supernet).removeprefix("Code that ran the stages: ").rstrip(".")
    return [f"The supernet: the no-KD XXS supernet of the CIFAR-10 result, {supernet['epochs']} epochs "
            f"({supernet['train_wall_h']:.2f} h of training calls; code {trained_by}); its last per-epoch "
            f"validation (1,280 images): smallest {final.get('val_top1_smallest', float('nan')):.1f}, largest "
            f"{final.get('val_top1_largest', float('nan')):.1f}, random mean "
            f"{final.get('val_top1_random_mean', float('nan')):.1f}.", ""]


def section(result: dict[str, Any], command: str, png: str) -> str:
    inputs = result["inputs"]
    lines = [
        HEADING, "",
        f"Command: `{command}` (resumable; `--report-only` rewrites this from `bench/results/search_strategies.json`). "
        f"Supernet checkpoint {inputs['checkpoint']}, LUT {Path(inputs['lut']).name}; budgets: params <= "
        f"{inputs['params_budget']:,.0f}, latency <= {inputs['latency_budget_ms']:.3f} table ms; "
        f"{result['evaluations']} evaluations per run in generations of {min(POPULATION, result['evaluations'])}; "
        f"seeds {result['seeds']}; "
        "selection on half 0 of the validation split (positions 0, 2, 4, ... of its sorted indices), the winner "
        "re-scored on half 1 and the test set; one evaluation cache shared by all runs.", "",
        c10.code_line(result), "",
        *supernet_lines(result.get("supernet")),
        f"![best so far]({png})", "",
        "Per strategy, median (range) over seeds; one accuracy on 2,500 images has a standard error of about "
        "0.8 points, on the 10k test images about 0.4:", "",
        *strategy_summary(result["runs"]), "",
        "Per run:", "",
        "| strategy | seed | best val half 0 | other half | test | unique evaluations | cache hits | proposed "
        "(over budget / repeated) | coarse screened | wall min (the attempt that finished it) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        c = r["candidates"]
        wall = f"{r['wall_s'] / 60:.1f}" if r["wall_s"] else "n/a"
        other = f"{r['best_val_other_half']:.2f}" if r["best_val_other_half"] is not None else "n/a"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['best_val_half']:.2f} | {other} | {r['best_test']:.2f} | "
                     f"{r['actor_evaluations']} | {r['cache_hits']} | {c.get('proposed', 'n/a')} "
                     f"({c.get('over_budget', 'n/a')} / {c.get('duplicate', 'n/a')}) | {c.get('coarse_screened', 0)} "
                     f"| {wall} |")
    if result.get("reach"):
        lines += ["", reach_sentence(result["reach"])]
    lines += ["", held_out_reading(result["runs"])]
    return "\n".join(lines) + "\n"


def reach_sentence(reach: dict[str, Any]) -> str:
    """`reach_statistics` in words: whether coarse-to-fine reaches plain evolution's final best, after how
    many evaluations, and whether that supports the paper's claim."""
    lo, hi = reach["interval_95"]
    shown = lambda v: "never" if v >= reach["not_reached_means"] else f"{v:g}"  # noqa: E731
    target = f"plain evolution's final best ({reach['target_val_half']:.2f}%, median over seeds)"
    when = (f"does not reach {target} within {reach['budget']} evaluations (median over seeds"
            if reach["evaluations"] >= reach["not_reached_means"] else
            f"reaches {target} after {shown(reach['evaluations'])} of {reach['budget']} evaluations "
            "(median over seeds")
    few = min(reach.get("seeds") or [0]) < 5  # a bootstrap of a median of 3 is about their range
    interval = "bootstrap interval over seeds, about their range with so few," if few else "bootstrap 95% interval over seeds"
    return (f"Coarse-to-fine {when}; {interval} {shown(lo)} to {shown(hi)}, "
            "'never' counting as the budget plus one). The paper's claim (the same or better accuracy "
            "at well under half the search cost) "
            + ("holds here." if reach["claim_holds"] else "is not supported by this experiment."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--checkpoint", help="default: the CIFAR-10 result's final supernet")
    parser.add_argument("--supernet", default="xxs")
    parser.add_argument("--lut")
    parser.add_argument("--params-budget", type=float)
    parser.add_argument("--latency-budget-ms", type=float)
    parser.add_argument("--out", type=Path, default=None, help="default $AUTOVIT_BENCH_DIR/search_strategies")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=RESULT_JSON)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not seeds or args.evaluations < 1:
        parser.error(f"--strategies from {STRATEGIES}, at least one seed and --evaluations >= 1 "
                     f"(got strategies {strategies}, seeds {seeds}, evaluations {args.evaluations})")
    png = args.results.with_suffix(".png")
    command = "nohup .venv/bin/python bench/search_strategies.py &"
    if args.report_only:
        result = json.loads(args.results.read_text())
    else:
        explicit = [args.checkpoint, args.lut, args.params_budget, args.latency_budget_ms]
        if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
            parser.error("--checkpoint, --lut, --params-budget and --latency-budget-ms go together")
        inputs = (cifar10_inputs() if args.checkpoint is None else
                  {"checkpoint": args.checkpoint, "supernet": args.supernet, "lut": args.lut,
                   "params_budget": args.params_budget, "latency_budget_ms": args.latency_budget_ms})
        out = (args.out or bench_dir() / "search_strategies").expanduser().resolve()
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "inputs.json"
        if saved.is_file() and json.loads(saved.read_text()) != inputs:
            raise SystemExit(f"{out} holds runs with other inputs ({saved}); pass another --out")
        write_json(saved, inputs)
        # the code of every invocation that ran searches (a run resumed over sessions may be another commit)
        code_path = out / "code_runs.json"
        code: dict[str, Any] = json.loads(code_path.read_text()) if readable_json(code_path) else {}
        if any(not results_path(out, strategy, seed).is_file() for seed in seeds for strategy in strategies):
            note_code(code)
            write_json(code_path, code)
        runs = []
        for seed in seeds:  # seed-major: a stop leaves whole seeds of every strategy
            for strategy in strategies:
                runs.append(run_one(inputs, strategy, seed, args.evaluations, out))
        result = {"inputs": public_paths(inputs), "evaluations": args.evaluations, "seeds": seeds, "runs": runs,
                  "reach": reach_statistics(runs), "code_runs": code.get("code_runs", []),
                  **provenance(inputs)}
        write_json(args.results, result)
    plot(result, png)
    text = section(result, command, str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png))
    replace_markdown_section(args.benchmarks_file, HEADING, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
