"""Benchmark: the claim (issue 31): a searched subnet vs the hand-designed peer vs random archs, each
trained stand-alone from scratch with one recipe, on the supernet that issue 30 chose.

One resumable command runs every stage in order and skips what is done; run it from a pinned copy of
the code (``git worktree add ../claim-<commit> <commit>``, its own venv), so that edits in the
checkout do not change a run halfway:

    cd ../claim-<commit>
    nohup .venv/bin/python bench/cifar10_claim.py --data-dir <cifar10> >> ~/.cache/autovit-ray/bench/cifar10_claim.log 2>&1 &
    .venv/bin/python bench/cifar10_claim.py --stop-after random   # the stages up to `random` only
    .venv/bin/python bench/cifar10_claim.py --report-only         # JSON, section and plot from what exists

The recipe, peer and input profile are the recipe issue's (bench/results/cifar10_recipe.json: `choice`,
its peer timm ``mobilevit_xxs``, profile ``cifar10-p1``, 32 px); the supernet is the one bench/supernet_fidelity.py
chose (``$AUTOVIT_BENCH_DIR/supernet_fidelity/<chosen>-e30``'s final epoch, or the remedy it names),
`chosen` read from bench/results/supernet_fidelity.json (until it exists the command refuses to start; ``--supernet PATH``
searches another checkpoint of the XXS ``cifar10-p1`` space). Every stand-alone run trains `EPOCHS` epochs.

Stages (their code commit is recorded in ``claim.json``; hours of the 2-core machine):

1. ``peer`` (~2 h): the peer's seeds `PEER_FIRST_SEEDS`, two at once, as the ``standalone`` stage trains
   them. They read no supernet, so they come first: their score files are kept (`kept_files`) whatever
   happens to the machine while the supernet is trained.
2. ``supernet`` (~3.4 h, on a new machine only): issue 30's chosen supernet trained again with
   bench/supernet_fidelity.py's command and settings (`train_supernet`; it resumes from its last epoch)
   where this machine lacks it and a stage left reads it: checkpoints are too large to keep. Where its
   per-epoch validation does not repeat issue 30's training (another machine's arithmetic), it is scored
   against issue 30's truth (14 subnets, kept in the repository) as issue 30 scored it (minutes), and the
   claim quotes that tau.
3. ``budgets`` (minutes): params <= 1.4x the peer's; per factor (1.0x, 0.8x) the latency-table budget
   3 % under where subnets measure that factor x the peer at the claim's setting (`calibrated_budget`,
   torch-cpu, 1 thread): the peer measured beside a first search's 10 best where the record holds them
   (``first_budgets``), else beside 12 seeded subnets near bench/supernet_fidelity.py's estimate
   (``band.json``), in one interleaved run.
4. ``search`` (~1 h): ``python -m autovit_ray.search``, coarse-to-fine, 500 evaluations (50 x 10), under
   each budget; candidates selected on validation after BatchNorm recalibration; the 10 best are scored
   on the test set with the weights they inherit (the arms' inherited numbers).
5. ``select`` (~10 min): those 10 measured beside the peer (torch-cpu, batch 1, 1 thread, wall clock,
   interleaved); the best by validation that meets the measured budget (`common.measured_selection`).
6. ``random`` (~30 min): `RANDOM_ARCHS` archs drawn uniformly (seeded), kept when they fit the params
   budget and their table latency is near the 1.0x budget, measured beside the peer, accepted at
   0.9-1.0x its measured latency (`sample_random_control`); ``random.json`` is written before any is trained.
7. ``inherited`` (~5 min): the validation top-1 every subnet arm (the searched and the random archs)
   inherits from the supernet, BatchNorm recalibrated as issue 30's truth does (``inherited.json``); the
   report ranks these against the archs' 30-epoch stand-alone accuracy: a check of that 15-epoch truth.
8. ``latency`` (~10 min): every arm's arch and the peer, batch 1, 1 thread, torch-cpu and onnxruntime,
   interleaved in one process started for it; medians with p10-p90 (``latency.json``).
9. ``table6`` (~2 h): bench/search_strategies.py on this supernet and the 1.0x budgets: coarse-to-fine,
   evolution and random search, 3 seeds x 300 evaluations, selected on one validation half and
   re-scored on the other. The last stage that reads the supernet.
10. ``standalone`` (~10 h; ~12 h with ``--full``): the peer with seeds 0-2 (seed 0: the recipe issue's run
   in ``$AUTOVIT_BENCH_DIR/cifar10_recipe`` when this machine has it, else trained here and said so;
   those the ``peer`` stage trained are not trained again), the searched 1.0x arch with seeds 0-2, the 0.8x arch with seed 0 (0-2 with ``--full``), each
   random arch with seed 0; the peer through the product's reference trainer, the archs through
   ``python -m autovit_ray.train --arch`` (both resume); two runs at once, each in a process of its own
   (``--train-run``) with one core and one torch thread. Each is scored on the 10k test images, each
   image's correctness kept (``standalone/<run>.test.json``).
11. ``latency2`` (~10 min): the latency stage again in a new process, at least an hour after the first
   finished (it refuses before); a budget counts as met only when it holds in both.
12. ``report``: bench/results/cifar10_claim.json, its BENCHMARKS.md section and the plot (what
   ``--report-only`` writes from whatever exists); and the product's report page of the artifacts folder
   (``python -m autovit_ray.report``'s ``report.html``: the two searches, and the arms as its comparison
   table with the verdict on top).

Compute plan: about 20 h of the 2-core machine in all (stand-alone runs: the peer about 1.2 h, a subnet
at its latency about 1.5 h, from the recipe issue and issue 14's runs; searches and Table 6 from issue
14's 300-evaluation runs of about 12 min each, one run at a time; two at once cut the stand-alone part
by about a quarter); 1.2 h less when the peer's seed 0 is reused, 2.6 h more
with ``--full``; ``budgets`` adds the latency table's build (~0.5 h) where bench/supernet_fidelity.py
has not built it on this machine and the repository keeps none, and ``supernet`` 3.4 h on a new machine.

The reading is fixed before looking (`verdict`): the searched 1.0x model beats the peer when the Welch
t 95 % interval of its seed mean minus the peer's excludes zero on the positive side; the paired
image-level bootstrap per seed pair stands beside it without deciding. Artifacts:
``$AUTOVIT_BENCH_DIR/cifar10_claim`` (default ``~/.cache/autovit-ray/bench``). The report also copies the
run's records and every finished run's score file into bench/results/kept/cifar10_claim/ (`kept_files`):
committed with it, they let a new machine go on where the last one stopped (a run then starts only
with what is missing there; the supernet is needed only while a stage that reads it is left).

Bad input, one error each (exit 2): an arm trained with another recipe, epochs or data path than the
peer (`check_same_recipe`), a random arch outside the budget (`check_random_control`), a latency file
of another backend or thread count (`check_latency_file`), ``latency2`` less than an hour after ``latency``.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from cifar10_recipe import (
    INPUT_PROFILE,
    MIN_TOKENS,
    PEER,
    RESOLUTION,
    Arm,
    arm_config,
    arm_spec,
    train_overrides,
)
from common import (
    ROOT,
    SELECTION_CANDIDATES,
    Mismatch,
    bench_dir,
    code_commit,
    code_line,
    keep_files,
    log,
    measure,
    measured_selection,
    public_path,
    public_paths,
    readable_json,
    recipe_fingerprint,
    restore_files,
    run_cli,
    save_figure,
    selection_candidates,
    staged_parser,
    write_json,
)
from supernet_fidelity import EPOCHS as SUPERNET_EPOCHS
from supernet_fidelity import (
    RECIPE_JSON,
    SAMPLERS,
    SCAN_CALIB_BATCHES,
    _signed,
    chosen_checkpoint,
    ensure_lut,
    lut_file,
    peer_band,
    per_epoch,
    same_epochs,
    score_on_truth,
    train_supernet,
)
from supernet_fidelity import RESULTS_JSON as FIDELITY_JSON
from supernet_fidelity import kept_files as fidelity_kept_files

from autovit_ray.cli_exits import cli_main
from autovit_ray.io import replace_markdown_section
from autovit_ray.space import Arch

# The stages that read the supernet come before the stand-alone runs' 10 h: a new machine resumes those
# from the kept files (`kept_files`) without the supernet, which is not kept. The peer's first pair comes
# before them all: it reads no supernet, and a new machine trains the supernet again after it.
STAGES = ("peer", "supernet", "budgets", "search", "select", "random", "inherited", "latency", "table6",
          "standalone", "latency2", "report")
SUPERNET_STAGES = ("budgets", "search", "inherited", "table6")
SUPERNET = "xxs"
EPOCHS = 30
FACTORS = (1.0, 0.8)  # latency budgets, x the peer's
PARAMS_FACTOR = 1.4
SEARCH_POPULATION, SEARCH_GENERATIONS = 50, 10  # 500 evaluations
PEER_SEEDS = SEARCHED_SEEDS = (0, 1, 2)
PEER_FIRST_SEEDS = (0, 1)  # one pair, trained two at once before anything reads the supernet
RANDOM_ARCHS, RANDOM_SEED = 5, 0
RANDOM_BAND = (0.9, 1.0)  # measured latency / the peer's, at the 1.0x budget
RANDOM_TABLE_WINDOW = (0.8, 1.1)  # table latency / the 1.0x budget of an arch worth measuring
RANDOM_BATCH, RANDOM_MAX_MEASURED = 8, 240
# The table budget is set where subnets measure `factor` x the peer at the claim's own setting (1 thread).
# The band's estimate, made at the table's 2 threads beside subnets of every size, put the peer 6 % too
# high on the table's scale, and no searched candidate met the measured budget (`first_budgets`). The
# archs a search picks are those the table underestimates most (table / measured 1.00 near the 1.0x
# budget, against 1.035 for random subnets there), so where a first search's candidates were measured,
# they are the calibration set; else random subnets near the band's estimate.
CALIBRATION_SUBNETS, CALIBRATION_SEED = 12, 0
CALIBRATION_WINDOW = (0.85, 1.05)  # their table latency / factor x the band's estimate of the peer
# Each search aims 3 % under its budget: the peer's measured latency moved 2.7 % between runs of one
# day, and a budget holds only where both later latency measurements meet it.
BUDGET_AIM = 0.97
LATENCY_BACKENDS = ("torch-cpu", "onnxruntime")
TRUTH_SEED = 0  # `python -m autovit_ray.fidelity`'s default, which issue 30's truth ran with (its bootstrap seed)
THREADS, CLOCK, ROUNDS = 1, "wall", 40
LATENCY2_GAP_S = 3600.0
# One line per start of the driver: "<UTC time> <CPU model> <n> cpus[, a note]". The VMs that run this
# experiment change CPU model between sessions, and the latency stages of its first run did not record
# their host: the report takes a measurement's host from the last line before it started.
HOSTS_LOG = "hosts.log"
# Stand-alone runs train two at once, each in a process of its own with one core and one torch thread:
# on 2 cores that is 1.34x the images per second of one two-thread run (a mid-size subnet's training
# steps, measured beside each other in one minute).
STANDALONE_AT_ONCE, STANDALONE_THREADS = 2, 1
TABLE6_EVALUATIONS, TABLE6_SEEDS = 300, (0, 1, 2)
ARMS = ("peer", "searched_1.0x", "searched_0.8x", "random_1.0x")
SECTION = "## The claim: searched vs hand-designed vs random (issue 31)"
RESULTS_JSON = ROOT / "bench" / "results" / "cifar10_claim.json"
PNG_IN_REPO = Path("bench", "results", "cifar10_claim.png")
PNG = ROOT / PNG_IN_REPO
BENCHMARKS = ROOT / "BENCHMARKS.md"
COMMAND = ("nohup .venv/bin/python bench/cifar10_claim.py --data-dir <cifar10> >> "
           "~/.cache/autovit-ray/bench/cifar10_claim.log 2>&1 &")


class NotYet(ValueError):
    """A stage asked for before the time the experiment fixed for it."""


def search_name(factor: float) -> str:
    return f"c2f-{factor:.1f}x"


def searched_arm(factor: float) -> str:
    return f"searched_{factor:.1f}x"


def arm_factor(arm: str) -> float:
    """The latency budget of an arm, x the peer's: `searched_0.8x` -> 0.8."""
    return float(arm.split("_")[1].rstrip("x"))


@dataclass(frozen=True)
class Run:
    """One stand-alone training: an arm, a seed, and for the random control the arch's number."""

    arm: str
    seed: int
    index: int | None = None

    @property
    def name(self) -> str:
        arm = self.arm.replace("_", "-")
        return f"{arm}-{self.index}-s{self.seed}" if self.index is not None else f"{arm}-s{self.seed}"


def standalone_runs(full: bool, randoms: int = RANDOM_ARCHS) -> list[Run]:
    """In the order they train: the peer's and the searched 1.0x arch's seeds in turn (a stop leaves
    pairs), then the random control, then the 0.8x arch (3 seeds with `full`)."""
    runs = [Run(arm, seed) for seed in PEER_SEEDS for arm in ("peer", "searched_1.0x")]
    runs += [Run("random_1.0x", 0, i) for i in range(randoms)]
    return runs + [Run("searched_0.8x", seed) for seed in (SEARCHED_SEEDS if full else (0,))]


# ---------------------------------------------------------------------------------------------------
# Inputs: the recipe issue's choice, the supernet issue's chosen supernet


def recipe_choice() -> dict[str, str]:
    """{adaptation, recipe} of the recipe issue (bench/results/cifar10_recipe.json)."""
    choice = json.loads(RECIPE_JSON.read_text()).get("choice") if RECIPE_JSON.is_file() else None
    if not choice:
        raise ValueError(f"bench/results/{RECIPE_JSON.name} has no `choice` yet: run bench/cifar10_recipe.py first")
    return {"adaptation": choice["adaptation"], "recipe": choice["recipe"]}


def chosen_supernet() -> str:
    """The supernet bench/results/supernet_fidelity.json chose (a sampler or a remedy)."""
    chosen = json.loads(FIDELITY_JSON.read_text()).get("chosen") if FIDELITY_JSON.is_file() else None
    if chosen is None:
        raise ValueError(f"bench/results/{FIDELITY_JSON.name} names no `chosen` supernet yet: run bench/supernet_fidelity.py "
                         "to its end (its truth stage chooses sandwich or uniform), or pass --supernet PATH")
    return str(chosen)


def supernet_checkpoint(override: Path | None) -> tuple[Path, str]:
    """(the final checkpoint to search, where it came from): `override`, else the supernet that
    bench/results/supernet_fidelity.json chose. Refuses another space or an unfinished training."""
    from autovit_ray.checkpoint import read_record, resolve_checkpoint

    if override is not None:
        path, source = resolve_checkpoint(override, SUPERNET), "--supernet"
    else:
        chosen = chosen_supernet()
        path, source = chosen_checkpoint(chosen, bench_dir() / "supernet_fidelity"), chosen
    record = read_record(path)
    space = record.meta.get("space", {})
    if (space.get("name"), space.get("profile")) != (SUPERNET, INPUT_PROFILE):
        raise Mismatch(f"supernet checkpoint {path} is of space {space.get('name')!r} / input profile "
                       f"{space.get('profile')!r}: the claim searches {SUPERNET!r} / {INPUT_PROFILE!r}")
    if not record.finished:
        raise Mismatch(f"supernet checkpoint {path} is at epoch {record.epoch} of {record.planned_epochs}: "
                       "finish its training first")
    return path, source


def find_supernet(override: Path | None) -> tuple[Path, str] | None:
    """`supernet_checkpoint`, checked before any stage runs; None where the chosen supernet is a sampler
    of bench/supernet_fidelity.py not (fully) trained on this machine: the ``supernet`` stage trains it.
    A remedy is not trained again here (its folder's runs are bench/supernet_fidelity.py's)."""
    if override is None:
        chosen = chosen_supernet()
        if chosen in SAMPLERS:
            try:
                chosen_checkpoint(chosen, bench_dir() / "supernet_fidelity")
            except ValueError:
                return None
    return supernet_checkpoint(override)


def peer_model(choice: Mapping[str, str]) -> Any:
    from autovit_ray.training.reference import build_spec

    return build_spec(arm_spec(peer_arm(choice, 0)), 10)[0].eval()


def peer_arm(choice: Mapping[str, str], seed: int) -> Arm:
    return Arm(choice["adaptation"], choice["recipe"], seed, EPOCHS)


def xxs_space() -> Any:
    from autovit_ray.space import load_space

    return load_space(SUPERNET, input_profile=INPUT_PROFILE)


# ---------------------------------------------------------------------------------------------------
# Pure rules (tests/test_bench_cifar10_claim.py)


def sample_random_control(draw: Callable[[], Arch], worth_measuring: Callable[[Arch], bool],
                          measure_ratios: Callable[[list[Arch]], list[float]], count: int = RANDOM_ARCHS,
                          band: tuple[float, float] = RANDOM_BAND, batch: int = RANDOM_BATCH,
                          max_measured: int = RANDOM_MAX_MEASURED, max_draws: int = 1_000_000) -> dict[str, Any]:
    """Rejection sampling: uniform draws (`draw`, seeded by the caller), distinct, that are
    `worth_measuring` (the params budget, a table latency near the budget) are measured `batch` at a time
    beside the peer (`measure_ratios`: measured latency / the peer's); the first `count` inside `band`
    are the control. Every measured arch is kept in `tried`."""
    accepted: list[dict[str, Any]] = []
    tried: list[dict[str, Any]] = []
    seen: set[str] = set()
    draws = 0
    while len(accepted) < count:
        if len(tried) >= max_measured:
            raise ValueError(f"only {len(accepted)} of {len(tried)} measured random archs lie at {band[0]}-{band[1]}x "
                             f"the peer's measured latency: fewer than the {count} needed (is the table window "
                             "of the archs worth measuring, RANDOM_TABLE_WINDOW, off?)")
        group: list[Arch] = []
        while len(group) < batch:
            if draws >= max_draws:
                raise ValueError(f"{draws} uniform draws gave {len(seen)} archs worth measuring: the budget "
                                 "leaves too few archs near it")
            arch, draws = draw(), draws + 1
            if arch.arch_hash not in seen and worth_measuring(arch):
                seen.add(arch.arch_hash)
                group.append(arch)
        for arch, ratio in zip(group, measure_ratios(group), strict=True):
            row = {"arch": arch.to_dict(), "name": str(arch), "ratio": ratio,
                   "accepted": band[0] <= ratio <= band[1] and len(accepted) < count}
            tried.append(row)
            if row["accepted"]:
                accepted.append(row)
    return {"archs": accepted, "tried": tried, "draws": draws, "band": list(band)}


def check_random_control(record: Mapping[str, Any], budgets: Mapping[str, Any],
                         band: tuple[float, float] = RANDOM_BAND) -> list[Arch]:
    """The control's archs from `random.json`; refuses a list sampled under other budgets, one arch
    outside `band` x the peer's measured latency or over the params budget, or too few archs."""
    wanted = {"latency_budget_ms": budgets["latency_budget_ms"]["1.0"], "params_budget": budgets["params_budget"]}
    if record.get("budget") != wanted:
        raise Mismatch(f"random.json was sampled under the budgets {record.get('budget')}, not this run's {wanted}: "
                       "move it away (and the random runs) to sample again")
    for row in record["archs"]:
        if not band[0] <= row["ratio"] <= band[1] or row["params"] > budgets["params_budget"]:
            raise Mismatch(f"random arch {row['name']} ({row['ratio']:.3f}x the peer's measured latency, "
                           f"{row['params']:,} params) is outside the control's budget: {band[0]}-{band[1]}x the "
                           f"peer's latency and <= {budgets['params_budget']:,.0f} params")
    if len(record["archs"]) < RANDOM_ARCHS:
        raise Mismatch(f"random.json holds {len(record['archs'])} archs; the control needs {RANDOM_ARCHS}")
    return [Arch.from_dict(row["arch"]) for row in record["archs"]]


def arm_fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """What two arms must share (recipe, epochs, data path: `common.recipe_fingerprint`), less the seed."""
    from autovit_ray.config import flatten
    from autovit_ray.training.config import config_from_dict

    found = flatten(recipe_fingerprint(config_from_dict(dict(config))))
    return {k: v for k, v in found.items() if k not in ("seed", "data.seed")}


def check_same_recipe(reference: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]],
                      reference_name: str = "the peer") -> None:
    """Refuse any run whose training config differs from `reference`'s in the recipe, the epochs or
    the data path (the seed may differ)."""
    want = arm_fingerprint(reference)
    for name, config in configs.items():
        got = arm_fingerprint(config)
        differing = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        if differing:
            detail = ", ".join(f"{k} {got.get(k)!r} (not {want.get(k)!r})" for k in differing[:6])
            raise Mismatch(f"{name} was trained with another recipe, epochs or data path than {reference_name}: "
                           f"{detail}; every arm trains as the peer does: move its folder away and rerun")


def check_latency_file(record: Mapping[str, Any], path: Path) -> None:
    """Refuse a latency file measured on other backends, with another thread count or clock."""
    found = {b: (e.get("backend"), e.get("threads"), e.get("clock")) for b, e in record.get("backends", {}).items()}
    wanted = {b: (b, THREADS, CLOCK) for b in LATENCY_BACKENDS}
    if found != wanted:
        raise Mismatch(f"{path} was measured as {found} (backend, threads, clock); this experiment measures "
                       f"{wanted}: move it away and rerun its stage")


def latency2_wait_s(first: Mapping[str, Any], now: float, gap_s: float = LATENCY2_GAP_S) -> float:
    """Seconds before the second latency measurement may start (<= 0: now)."""
    return float(first["finished_at"]) + gap_s - now


def latency_words(ratios: Sequence[float], factor: float) -> str:
    """Two measured latency ratios to the peer in words: a budget holds only when both meet it, and a
    ratio near 1 is parity, never "faster"."""
    shown = " and ".join(f"{r:.2f}x" for r in ratios)
    if len(ratios) < 2:
        return f"measured once ({shown} the peer's latency): the budget is not confirmed yet"
    over = sum(r > factor for r in ratios)
    if over:
        where = "both measurements" if over == len(ratios) else "one measurement"
        return f"at {shown} the peer's measured latency: over its {factor:.1f}x budget in {where}, not met"
    if min(ratios) >= 0.95 * factor:
        return f"at {shown} the peer's measured latency in two measurements: within its {factor:.1f}x budget (parity)"
    return f"at {shown} the peer's measured latency in two measurements, within its {factor:.1f}x budget"


def welch_or_none(a: Sequence[float], b: Sequence[float]) -> dict[str, Any] | None:
    """`welch_interval(a, b)`, or None where it has no interval: under two values a side, or both sides
    constant (e.g. [84.0, 84.0] and [83.0, 83.0])."""
    from autovit_ray.stats import welch_interval

    if len(a) < 2 or len(b) < 2 or statistics.pvariance(a) + statistics.pvariance(b) == 0:
        return None
    return welch_interval(a, b)


def verdict(peer: Sequence[float], searched: Sequence[float], inherited: float | None,
            random_best: float | None) -> dict[str, Any]:
    """The reading fixed before looking. `beats_peer`: the Welch t 95 % interval of the searched 1.0x
    seed mean minus the peer's lies above zero (None with fewer than 2 seeds a side);
    `beats_peer_inherited`: the searched model's inherited test top-1 is above the peer's seed mean (the
    paper's verdict, read beside `inherited_above_every_peer_seed`: outside the peer's seed spread);
    `beats_random`: the searched seed mean is above the best random arch."""
    found: dict[str, Any] = {"beats_peer": None, "difference": None, "low": None, "high": None, "df": None,
                             "beats_peer_inherited": None, "inherited_above_every_peer_seed": None,
                             "beats_random": None}
    w = welch_or_none(searched, peer)
    if w is not None:
        found.update(difference=w["difference"], low=w["low"], high=w["high"], df=w["df"], beats_peer=w["low"] > 0)
    if inherited is not None and peer:
        found["beats_peer_inherited"] = inherited > statistics.mean(peer)
        found["inherited_above_every_peer_seed"] = inherited > max(peer)
    if random_best is not None and searched:
        found["beats_random"] = statistics.mean(searched) > random_best
    return found


def versus_random(searched: Sequence[float], peer: Sequence[float], randoms: Sequence[float]) -> dict[str, Any]:
    """The noise beside the "beats random" reading (reported, not deciding): the searched seed mean's
    margin over the best random arch, one training's seed sd (pooled over the searched arm's and the
    peer's seeds: each random arch is one training), and the searched seed mean minus the random archs'
    mean with its Welch 95 % interval (the searched arch against a typical arch drawn at its latency)."""
    spread = [statistics.variance(seeds) for seeds in (searched, peer) if len(seeds) >= 2]
    found: dict[str, Any] = {
        "margin_over_best": statistics.mean(searched) - max(randoms), "random_mean": statistics.mean(randoms),
        "random_sd": statistics.stdev(randoms) if len(randoms) >= 2 else None,
        "seed_sd": math.sqrt(statistics.mean(spread)) if spread else None, "versus_mean": None}
    w = welch_or_none(searched, randoms)
    if w is not None:
        found["versus_mean"] = {k: w[k] for k in ("difference", "low", "high", "df")}
    return found


def random_sentence(v: Mapping[str, Any], searched_mean: float, random_best: float, archs: int) -> str:
    """The fixed "beats random" reading, with the noise beside it (`v`: `versus_random`'s record)."""
    text = (f"Searched vs random: the searched seed mean {searched_mean:.2f} is "
            f"{'above' if v['margin_over_best'] > 0 else 'not above'} the best of the {archs} random archs "
            f"({random_best:.2f}): a margin of {v['margin_over_best']:+.2f} points")
    if v["seed_sd"] is not None:
        text += (f"; one training's seed sd here is {v['seed_sd']:.2f} points (pooled over the searched arm's and "
                 "the peer's seeds), and each random arch is one training, so the best of them is lifted by its "
                 "seed noise too")
    text += f". The random archs' mean is {v['random_mean']:.2f}"
    if v["random_sd"] is not None:
        text += f" (sd {v['random_sd']:.2f} over archs)"
    w = v["versus_mean"]
    if w is not None:
        text += (f"; the searched seed mean minus it: {w['difference']:+.2f} points, Welch 95 % interval "
                 f"{w['low']:+.2f} to {w['high']:+.2f} (reported, not deciding)")
    return text + "."


def verdict_sentence(v: Mapping[str, Any], seeds: tuple[int, int], ratios: Mapping[str, Sequence[float]]) -> str:
    """The verdict in one sentence (an interval that holds zero is "not supported", not "does not hold");
    `seeds`: (the searched model's, the peer's); `ratios`: per backend, its measured latency ratios to the
    peer (every backend is named: the budget is torch-cpu's table, and another runtime can rank otherwise)."""
    if v["difference"] is None:
        return ("Not decided yet: the searched 1.0x model and the peer need at least two finished seeds each "
                "(the Welch interval decides).")
    counts = f"{seeds[0]} seeds each" if seeds[0] == seeds[1] else f"{seeds[0]} seeds of it, {seeds[1]} of the peer"
    numbers = (f"{v['difference']:+.2f} points of test top-1, Welch 95 % interval {v['low']:+.2f} to {v['high']:+.2f} "
               f"({counts})")
    where = "".join(f"{'; ' if i else ', '}on {backend} {latency_words(measured, 1.0)}"
                    for i, (backend, measured) in enumerate((b, r) for b, r in ratios.items() if r))
    if v["low"] > 0:
        return f"The searched model beats the hand-designed peer: {numbers}{where}."
    if v["high"] < 0:
        return f"The hand-designed peer beats the searched model: {numbers}{where}."
    return (f"That the searched model beats the hand-designed peer is not supported by this experiment: "
            f"{numbers}, an interval that includes zero{where}.")


# ---------------------------------------------------------------------------------------------------
# Stages


@dataclass
class Claim:
    """A run of the driver: where it works, what it searches, and its record (`claim.json`). `supernet`:
    (the checkpoint, where it came from), None until the ``supernet`` stage has it and where no stage left
    to run reads it; `needs_supernet`: whether a stage left to run reads it."""

    out: Path
    data_dir: Path
    supernet: tuple[Path, str] | None
    choice: dict[str, str]
    full: bool
    record: dict[str, Any]
    save: Callable[[], None]
    needs_supernet: bool = False

    @property
    def checkpoint(self) -> Path:
        if self.supernet is None:
            raise ValueError(f"the record says stages {', '.join(SUPERNET_STAGES)} are done, but one needs the "
                             "supernet again (its files are missing): rerun with the supernet on this machine or "
                             "--supernet PATH")
        return self.supernet[0]

    @property
    def supernet_source(self) -> str:
        return self.supernet[1] if self.supernet else "--supernet"

    def done(self, stage: str, entry: Any) -> None:
        self.record[stage] = entry
        self.save()


def run_peer(c: Claim) -> None:
    """The peer's first seeds (`PEER_FIRST_SEEDS`), trained and scored as the ``standalone`` stage does."""
    runs = [Run("peer", seed) for seed in PEER_FIRST_SEEDS]
    todo = [run for run in runs if not readable_json(score_path(c.out, run))]
    if not todo and "peer" in c.record:
        return
    log(f"peer: {', '.join(run.name for run in todo) or 'nothing'} to train, {STANDALONE_AT_ONCE} at once, before "
        "anything reads the supernet")
    (c.out / "standalone").mkdir(parents=True, exist_ok=True)
    common.run_at_once(todo, lambda run: train_in_child(c, run), STANDALONE_AT_ONCE)
    c.done("peer", {"runs": [run.name for run in runs], "commit": code_commit()})


def run_supernet(c: Claim) -> None:
    """Issue 30's chosen supernet trained again where this machine lacks it and a stage left reads it, and
    how far it repeats the one issue 30 scored (`same_per_epoch`: epochs whose validation numbers are the
    same to every digit). Where it does not repeat it, issue 30's tau is not this supernet's: it is
    scored against issue 30's truth the way issue 30 scored it (`truth_fidelity`), and the report quotes
    that tau."""
    if c.supernet is None and c.needs_supernet:
        chosen = chosen_supernet()
        log(f"supernet: {chosen} is not on this machine: training it again with bench/supernet_fidelity.py's "
            "settings")
        folder = bench_dir() / "supernet_fidelity"
        train_supernet(chosen, folder, c.data_dir)
        c.supernet = supernet_checkpoint(None)
        scored = json.loads(FIDELITY_JSON.read_text())["supernets"][chosen].get("per_epoch", [])
        repeated = same_epochs(per_epoch(folder / f"{chosen}-e{SUPERNET_EPOCHS}"), scored)
        log(f"supernet: {repeated['same']} of {repeated['epochs']} epochs repeat issue 30's validation numbers")
        c.done("supernet", {"checkpoint": public_path(c.supernet[0]), "source": chosen, "trained_again": True,
                            "same_per_epoch": repeated, "commit": code_commit()})
    again = c.record.get("supernet")
    if c.supernet is None or not again or "truth_fidelity" in again or repeats_issue30(again):
        return
    log("supernet: scoring it against issue 30's truth (its training does not repeat issue 30's)")
    c.done("supernet", {**again, "truth_fidelity": truth_fidelity(c.supernet[0]), "truth_fidelity_commit": code_commit()})
    log(f"supernet: in-band Kendall tau {c.record['supernet']['truth_fidelity']['tau_in_band']}")


def repeats_issue30(again: Mapping[str, Any]) -> bool:
    """Whether a supernet trained again repeats, epoch for epoch, the one issue 30 scored."""
    repeated = again.get("same_per_epoch") or {}
    return bool(repeated) and repeated["same"] == repeated["epochs"]


def truth_fidelity(checkpoint: Path) -> dict[str, Any]:
    """The supernet's inherited scores of issue 30's truth subnets (kept in the repository in
    bench/results/supernet_fidelity.json) and its fidelity statistics against their stand-alone
    accuracies, as issue 30 scored its supernets: `python -m autovit_ray.fidelity`'s default seed, the
    recipe's BatchNorm recalibration."""
    truth = json.loads(FIDELITY_JSON.read_text())["standalone"]
    return {**score_on_truth(checkpoint, truth["subnets"], TRUTH_SEED, SCAN_CALIB_BATCHES, None),
            "subnets": len(truth["subnets"]), "truth_epochs": truth["epochs"]}


def calibrated_budget(factor: float, peer_ms: float, lut_ms: Sequence[float], measured_ms: Sequence[float]) -> dict[str, Any]:
    """The table latency at which a subnet measures `factor` x the peer's `peer_ms`: from subnets near that
    budget measured beside the peer in one run, their median table / measured ratio (`level`) times
    `factor` x `peer_ms`. Near the budget, because the ratio drifts with a subnet's size."""
    if not lut_ms or len(lut_ms) != len(measured_ms):
        raise ValueError(f"expected the table and measured latencies of the same subnets, got {len(lut_ms)} and "
                         f"{len(measured_ms)}")
    level = statistics.median(lut / measured for lut, measured in zip(lut_ms, measured_ms, strict=True))
    return {"peer_measured_ms": peer_ms, "level": level, "budget_ms": factor * peer_ms * level,
            "subnets": len(lut_ms)}


def draw_near(space: Any, rng: random.Random, fits: Callable[[Arch], bool], count: int,
              max_draws: int = 1_000_000) -> list[Arch]:
    """`count` distinct uniform draws that `fits`."""
    found: dict[str, Arch] = {}
    for _ in range(max_draws):
        arch = space.sample(rng)
        if arch.arch_hash not in found and fits(arch):
            found[arch.arch_hash] = arch
            if len(found) == count:
                return list(found.values())
    raise ValueError(f"{max_draws} uniform draws gave {len(found)} of the {count} archs wanted near the budget")


def run_budgets(c: Claim) -> None:
    """The peer's parameters and, per latency factor, the table budget `BUDGET_AIM` x where subnets measure
    that factor x the peer at the claim's setting (`calibrated_budget`): from a first search's candidates,
    measured beside the peer by its ``select`` stage, where the record holds them (``first_budgets``); else
    the peer beside `CALIBRATION_SUBNETS` seeded draws whose table latency is near the band's estimate,
    torch-cpu, 1 thread, one interleaved run."""
    from autovit_ray.latency import LatencyTable
    from autovit_ray.models import create_subnet
    from autovit_ray.plan import count_params

    if "budgets" in c.record:
        return
    ensure_lut()
    band = peer_band(bench_dir() / "supernet_fidelity")  # the peer beside random subnets, 2 threads, in table ms
    space = xxs_space()
    table = LatencyTable.load(lut_file(), space=space)
    peer = peer_model(c.choice)
    params = sum(p.numel() for p in peer.parameters())
    calibration: dict[str, dict[str, Any]] = {}
    first = c.record.get("first_budgets")
    for i, factor in enumerate(FACTORS):
        if first:
            measured = first["select"][search_name(factor)]
            rows = measured["candidates"]
            calibration[str(factor)] = {**calibrated_budget(
                BUDGET_AIM * factor, measured["peer_measured_ms"], [r["lut_ms"] for r in rows],
                [r["measured_ms"] for r in rows]), "subnets_from": f"first search {search_name(factor)}"}
            continue
        low, high = (w * factor * band["peer_lut_ms"] for w in CALIBRATION_WINDOW)
        subnets = draw_near(space, random.Random(CALIBRATION_SEED + i), lambda a, low=low, high=high: (
            count_params(a, 10, space) <= PARAMS_FACTOR * params and low <= table.predict_latency(a) <= high),
            CALIBRATION_SUBNETS)
        log(f"budgets: the peer beside {len(subnets)} subnets of {low:.2f}-{high:.2f} table ms ({factor}x)")
        stats = measure([peer, *(create_subnet(a, 10, space) for a in subnets)], "torch-cpu", CLOCK, ROUNDS,
                        seed=11 + i, resolution=RESOLUTION)
        calibration[str(factor)] = {**calibrated_budget(BUDGET_AIM * factor, stats[0]["median_ms"],
                                                        [table.predict_latency(a) for a in subnets],
                                                        [s["median_ms"] for s in stats[1:]]),
                                    "subnets_from": "random draws near the band's estimate"}
    c.done("budgets", {"peer_lut_ms": calibration["1.0"]["budget_ms"] / BUDGET_AIM, "aim": BUDGET_AIM,
                       "band_peer_lut_ms": band["peer_lut_ms"],
                       "peer_params": params, "params_budget": PARAMS_FACTOR * params, "lut": public_path(lut_file()),
                       "latency_budget_ms": {f: cal["budget_ms"] for f, cal in calibration.items()},
                       "calibration": calibration,
                       "band": public_path(bench_dir() / "supernet_fidelity" / "band.json"),
                       "supernet": public_path(c.checkpoint), "supernet_source": c.supernet_source,
                       "commit": code_commit()})
    log(f"budgets: {c.record['budgets']}")


def search_results(out: Path, factor: float) -> Path:
    return out / "search" / search_name(factor) / "results.json"


def kept_files(out: Path) -> dict[str, Path]:
    """The claim's records, kept in the repository (bench/results/kept/cifar10_claim/) by the report and put
    back by a run on a new machine where they are missing (`common.keep_files`, `common.restore_files`):
    the stage record, the searches' results, the random draw, the inherited scores, both latency
    measurements, the host log (which CPU each measurement ran on, for a report written elsewhere),
    Table 6, and every stand-alone run's score file (its test top-1 and each test image's correctness:
    what its hours of training were for). Checkpoints are not kept: a run cut short on a machine that is
    gone trains again from its start."""
    names = ["claim.json", "random.json", "inherited.json", "latency.json", "latency2.json", HOSTS_LOG,
             "table6/search_strategies.json", *(f"search/{search_name(f)}/results.json" for f in FACTORS)]
    files = {f"cifar10_claim/{name}": out / name for name in names}
    for run in standalone_runs(full=True):
        path = score_path(out, run)
        files[f"cifar10_claim/{path.relative_to(out).as_posix()}"] = path
    return files


def run_search(c: Claim) -> None:
    from autovit_ray.search.config import SearchConfig

    searches = c.record.setdefault("search", {})
    budgets = c.record["budgets"]
    for factor in FACTORS:
        name = search_name(factor)
        if name in searches and readable_json(search_results(c.out, factor)):
            continue
        config = SearchConfig(name=name, checkpoint=str(c.checkpoint), supernet=SUPERNET, lut=str(lut_file()),
                              params_budget=budgets["params_budget"],
                              latency_budget_ms=budgets["latency_budget_ms"][str(factor)], strategy="coarse-to-fine",
                              population=SEARCH_POPULATION, generations=SEARCH_GENERATIONS, parents=10, evaluators=2,
                              top_k=SELECTION_CANDIDATES, export_formats=(), no_register=True, seed=0,
                              data_dir=str(c.data_dir), output_dir=str(c.out))
        log(f"search {name}: {SEARCH_POPULATION * SEARCH_GENERATIONS} evaluations, coarse-to-fine")
        start = time.time()
        run_cli(["autovit_ray.search", *config.to_argv()], c.out / f"search-{name}.log", common.mlflow_env(c.out))
        searches[name] = {"factor": factor, "results": public_path(search_results(c.out, factor)),
                          "wall_s": time.time() - start, "commit": code_commit()}
        c.save()


def run_select(c: Claim) -> None:
    from autovit_ray.models import create_subnet

    selection = c.record.setdefault("select", {})
    space = xxs_space()
    for factor in FACTORS:
        name = search_name(factor)
        if name in selection:
            continue
        best = json.loads(search_results(c.out, factor).read_text())["best"]
        candidates = selection_candidates(best)
        log(f"select {name}: the {len(candidates)} best by validation measured beside the peer")
        models = [create_subnet(Arch.from_dict(row["arch"]), 10, space) for row in candidates]  # latency: arch only
        stats = measure([peer_model(c.choice), *models], "torch-cpu", CLOCK, ROUNDS, seed=3, resolution=RESOLUTION)
        chosen = measured_selection(candidates, stats, factor)
        inherited = next((b for b in best if b["arch"] == chosen["chosen"]), None)
        selection[name] = {**chosen, "inherited": inherited and {k: inherited[k] for k in (
            "name", "val_top1", "test_top1", "params", "macs", "latency_ms")}, "commit": code_commit()}
        log(f"select {name}: chosen {inherited['name'] if inherited else None}")
        c.save()


def chosen_arch(record: Mapping[str, Any], factor: float) -> Arch | None:
    chosen = record.get("select", {}).get(search_name(factor), {}).get("chosen")
    return Arch.from_dict(chosen) if chosen else None


def run_random(c: Claim) -> None:
    from autovit_ray.latency import LatencyTable
    from autovit_ray.models import create_subnet
    from autovit_ray.plan import count_params

    path = c.out / "random.json"
    if readable_json(path):
        return
    space = xxs_space()
    table = LatencyTable.load(lut_file(), space=space)
    budgets = c.record["budgets"]
    budget_ms, params_budget = budgets["latency_budget_ms"]["1.0"], budgets["params_budget"]
    peer = peer_model(c.choice)
    rng = random.Random(RANDOM_SEED)
    low, high = RANDOM_TABLE_WINDOW

    def worth_measuring(arch: Arch) -> bool:
        return (count_params(arch, 10, space) <= params_budget
                and low * budget_ms <= table.predict_latency(arch) <= high * budget_ms)

    def ratios(archs: list[Arch]) -> list[float]:
        log(f"random: measuring {len(archs)} uniform draws beside the peer")
        stats = measure([peer, *(create_subnet(a, 10, space) for a in archs)], "torch-cpu", CLOCK, ROUNDS // 2,
                        seed=7, resolution=RESOLUTION)
        return [s["median_ms"] / stats[0]["median_ms"] for s in stats[1:]]

    found = sample_random_control(lambda: space.sample(rng), worth_measuring, ratios)
    for row in found["tried"]:
        arch = Arch.from_dict(row["arch"])
        row.update(params=count_params(arch, 10, space), lut_ms=table.predict_latency(arch))
    write_json(path, {**found, "seed": RANDOM_SEED, "table_window": list(RANDOM_TABLE_WINDOW),
                      "budget": {"latency_budget_ms": budget_ms, "params_budget": params_budget},
                      "commit": code_commit()})  # the list is on disk before any of it trains
    c.done("random", {"archs": len(found["archs"]), "measured": len(found["tried"]), "commit": code_commit()})


def random_archs(out: Path, budgets: Mapping[str, Any]) -> list[Arch]:
    return check_random_control(json.loads((out / "random.json").read_text()), budgets)


def subnet_archs(out: Path, record: Mapping[str, Any]) -> dict[str, Arch]:
    """{arm key: arch} of every arm that is a subnet of the space: `searched_1.0x`, `searched_0.8x` (where
    their search chose one) and `random_1.0x/<i>`."""
    archs = {searched_arm(f): arch for f in FACTORS if (arch := chosen_arch(record, f)) is not None}
    return archs | {f"random_1.0x/{i}": arch for i, arch in enumerate(random_archs(out, record["budgets"]))}


def arm_models(out: Path, record: Mapping[str, Any], choice: Mapping[str, str]) -> dict[str, Any]:
    """{arm key: an untrained model of its arch} for the latency stages (latency depends on the arch)."""
    from autovit_ray.models import create_subnet

    space = xxs_space()
    return {"peer": peer_model(choice)} | {key: create_subnet(arch, 10, space)
                                           for key, arch in subnet_archs(out, record).items()}


def run_inherited(c: Claim) -> None:
    """The validation top-1 each subnet arm inherits (BatchNorm recalibrated with issue 30's scan and truth
    setting), for the report's check of issue 30's 15-epoch truth against these 30-epoch runs."""
    from autovit_ray.fidelity import inherited_top1

    path = c.out / "inherited.json"
    if readable_json(path):
        return
    archs = subnet_archs(c.out, c.record)
    log(f"inherited: {len(archs)} subnet arms scored on validation with the supernet's weights")
    scores = inherited_top1(c.checkpoint, list(archs.values()), SCAN_CALIB_BATCHES)
    write_json(path, {"subnets": {key: {"arch": arch.to_dict(), "val_top1": score}
                                  for (key, arch), score in zip(archs.items(), scores)},
                      "calib_batches": SCAN_CALIB_BATCHES, "supernet": public_path(c.checkpoint),
                      "supernet_source": c.supernet_source, "commit": code_commit()})
    c.done("inherited", {"file": public_path(path), "commit": code_commit()})


def measure_latency(out: Path, stage: str, choice: Mapping[str, str]) -> None:
    """The body of a latency stage, in the process started for it (`--measure-latency`)."""
    started = time.time()
    record, _ = common.open_record(out / "claim.json", report_only=True)
    models = arm_models(out, record, choice)
    result: dict[str, Any] = {"stage": stage, "pid": os.getpid(), "process_started_at": started, "backends": {},
                              "host": host_line(started)}
    for backend in LATENCY_BACKENDS:
        log(f"{stage}: {len(models)} models on {backend}, batch 1, {THREADS} thread, {CLOCK} clock, interleaved")
        stats = measure(list(models.values()), backend, CLOCK, ROUNDS, seed=11, resolution=RESOLUTION)
        result["backends"][backend] = {"backend": backend, "threads": THREADS, "clock": CLOCK,
                                       "models": dict(zip(models, stats))}
    result.update(finished_at=time.time(), commit=code_commit())
    write_json(out / f"{stage}.json", result)


def host_line(at: float) -> str:
    """This machine as a `HOSTS_LOG` line at time `at`."""
    from autovit_ray.latency.backends import cpu_model

    return f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))} {cpu_model()} {os.cpu_count()} cpus"


def host_at(lines: Sequence[str], at: float) -> str | None:
    """The host (CPU model and count) of the last `HOSTS_LOG` line written at or before `at`, or None."""
    found = None
    for line in lines:
        when, _, rest = line.strip().partition(" ")
        try:
            written = calendar.timegm(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            continue  # not a host line
        if written <= at:
            found = rest.split(",")[0]  # without the note
    return found


def latency_hosts(out: Path) -> dict[str, str | None]:
    """Each latency measurement's host: its own record (`host`), else the host log's line before it."""
    log_path = out / HOSTS_LOG
    lines = log_path.read_text().splitlines() if log_path.is_file() else []
    hosts: dict[str, str | None] = {}
    for stage in ("latency", "latency2"):
        record = _read(out / f"{stage}.json")
        if record is not None:
            own, started = record.get("host"), record.get("process_started_at")
            hosts[stage] = (own.partition(" ")[2] if own else
                            host_at(lines, float(started)) if started is not None else None)
    return hosts


def run_latency(c: Claim, stage: str) -> None:
    path = c.out / f"{stage}.json"
    if readable_json(path):
        check_latency_file(json.loads(path.read_text()), path)
        return
    if stage == "latency2":
        first = json.loads((c.out / "latency.json").read_text())
        wait = latency2_wait_s(first, time.time())
        if wait > 0:
            at = time.strftime("%H:%M", time.localtime(time.time() + wait))
            raise NotYet(f"stage latency2 repeats the latency measurement at least {LATENCY2_GAP_S / 3600:.0f} h after "
                         f"the first finished: wait {wait / 60:.0f} min more (until {at}), then rerun")
    # a process of its own: the second measurement must not share the first one's process
    bench = os.pathsep.join(filter(None, [str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH")]))
    run_cli(["cifar10_claim", "--measure-latency", stage, "--out", str(c.out)], c.out / f"{stage}.log",
            {"PYTHONPATH": bench})
    check_latency_file(json.loads(path.read_text()), path)
    c.done(stage, {"file": public_path(path), "commit": code_commit()})


def train_peer_seed(c: Claim, run: Run) -> tuple[Path, bool]:
    """(the folder of the peer's trained seed, whether it was reused): seed 0 is the recipe issue's run
    where this machine has it; the others, and seed 0 elsewhere, train here (resumable)."""
    from autovit_ray.training.reference import train_reference

    arm = peer_arm(c.choice, run.seed)
    recipe_run = bench_dir() / "cifar10_recipe" / arm.name
    if run.seed == 0 and (recipe_run / "model.pt").is_file():
        log(f"standalone: peer seed 0 is the recipe issue's run {public_path(recipe_run)}")
        return recipe_run, True
    if run.seed == 0:
        log(f"standalone: the recipe issue's run {public_path(recipe_run)} is not on this machine: training the "
            "peer's seed 0 here too")
    run_dir = c.out / "standalone" / run.name
    log(f"standalone: {run.name} ({EPOCHS} epochs, the reference trainer; resumes)")
    train_reference(arm_config(arm, c.data_dir), arm_spec(arm), run_dir, log=log)
    return run_dir, False


def train_arch(c: Claim, run: Run, arch: Arch) -> Path:
    """`python -m autovit_ray.train --arch` for one run (resumes from its last epoch); its final checkpoint."""
    from autovit_ray.checkpoint import find_checkpoint
    from autovit_ray.io import atomic_write_text

    folder = c.out / "standalone"
    try:
        return find_checkpoint(folder / run.name, SUPERNET, final=True)
    except ValueError:
        pass
    arch_file = folder / f"{run.name}.arch.json"
    atomic_write_text(arch_file, arch.to_json())
    log(f"standalone: {run.name} {arch} ({EPOCHS} epochs, train --arch; resumes)")
    cli = ["autovit_ray.train", "--config", "cifar10", "--name", run.name, "--output-dir", str(folder),
           "--arch", str(arch_file)]
    for item in [*train_overrides(c.choice["recipe"], EPOCHS, c.data_dir), f"seed={run.seed}", "ray.use_gpu=false",
                 f"ray.torch_threads={STANDALONE_THREADS}", f"ray.cpus_per_worker={STANDALONE_THREADS}"]:
        cli += ["--set", item]
    run_cli(cli, folder / f"{run.name}.log", common.mlflow_env(c.out))
    return find_checkpoint(folder / run.name, SUPERNET, final=True)


def score_test_set(model: Any, config: Mapping[str, Any], data_dir: Path) -> tuple[float, str]:
    """(test top-1, each of the 10k test images' correctness as a string of 0 / 1)."""
    import dataclasses

    import torch

    from autovit_ray.data import build_loader
    from autovit_ray.evaluation import evaluate
    from autovit_ray.training.config import config_from_dict

    data = dataclasses.replace(config_from_dict(dict(config)).data, data_dir=str(data_dir))
    score = evaluate(model, build_loader(data, "test", RESOLUTION), resolution=RESOLUTION, device=torch.device("cpu"),
                     per_image=True)
    return score.top1, "".join("1" if hit else "0" for hit in score.correct_per_image)


def score_run(c: Claim, run: Run, arch: Arch | None) -> dict[str, Any]:
    """Train (or reuse) one run and score it on the test set; its record."""
    import torch

    from autovit_ray.checkpoint import load_supernet, read_record
    from autovit_ray.training.reference import build_spec

    start = time.time()
    if arch is None:  # the peer
        run_dir, reused = train_peer_seed(c, run)
        config = torch.load(run_dir / "state.pt", map_location="cpu", weights_only=True)["fingerprint"]["config"]
        model = build_spec(arm_spec(peer_arm(c.choice, run.seed)), 10)[0]
        model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    else:
        checkpoint, reused = train_arch(c, run, arch), False
        run_dir, config = checkpoint, read_record(checkpoint).config
        model = load_supernet(checkpoint)[0].get_active_subnet(arch)
    top1, correct = score_test_set(model, config, c.data_dir)
    log(f"standalone: {run.name}: test top-1 {top1:.2f}")
    return {"run": run.name, "arm": run.arm, "seed": run.seed, "index": run.index,
            "arch": arch.to_dict() if arch else None, "params": sum(p.numel() for p in model.parameters()),
            "test_top1": top1, "correct": correct, "config": config, "folder": public_path(run_dir),
            "reused": reused, "wall_s": time.time() - start, "commit": code_commit()}


def score_path(out: Path, run: Run) -> Path:
    return out / "standalone" / f"{run.name}.test.json"


def run_arch(c: Claim, run: Run) -> Arch | None:
    """The arch a run trains: None for the peer, and for a searched arm whose search chose none."""
    if run.arm == "peer":
        return None
    if run.index is not None:
        return random_archs(c.out, c.record["budgets"])[run.index]
    return chosen_arch(c.record, arm_factor(run.arm))


def train_one(c: Claim, run: Run) -> None:
    """Train (or resume) one run and score it on the test set (``standalone/<run>.test.json``), in the
    process of its own that `train_in_child` starts. Every run must have the recipe the recipe issue
    chose (the peer's seed 0 is that recipe's own run), seeds aside."""
    import torch

    torch.set_num_threads(STANDALONE_THREADS)  # the peer's trainer runs in this process
    result = score_run(c, run, run_arch(c, run))
    planned = arm_config(peer_arm(c.choice, 0), c.data_dir).to_dict()
    check_same_recipe(planned, {run.name: result["config"]},
                      "the recipe issue's choice" if run == Run("peer", 0) else "the peer")
    write_json(score_path(c.out, run), result)


def child_argv(c: Claim, run: Run) -> list[str]:
    """`python -m cifar10_claim` arguments that train one run in a new process (`--train-run`; it reads no
    supernet)."""
    argv = ["cifar10_claim", "--train-run", run.name, "--out", str(c.out), "--data-dir", str(c.data_dir)]
    return [*argv, "--full"] if c.full else argv


def train_in_child(c: Claim, run: Run) -> None:
    """`train_one` in a process of its own, its output in ``standalone/<run>.driver.log``."""
    bench = os.pathsep.join(filter(None, [str(ROOT / "bench"), str(ROOT), os.environ.get("PYTHONPATH")]))
    log_path = c.out / "standalone" / f"{run.name}.driver.log"
    log(f"standalone: {run.name}: training in a process of its own ({public_path(log_path)})")
    start = time.time()
    run_cli(child_argv(c, run), log_path, {"PYTHONPATH": bench})
    if not readable_json(score_path(c.out, run)):
        raise RuntimeError(f"standalone: {run.name} ended without its score file {score_path(c.out, run)}")
    log(f"standalone: {run.name}: done in {(time.time() - start) / 3600:.2f} h")


def run_standalone(c: Claim) -> None:
    runs = standalone_runs(c.full, len(random_archs(c.out, c.record["budgets"])))
    todo = []
    for run in runs:
        if readable_json(score_path(c.out, run)):
            continue
        if run.arm != "peer" and run_arch(c, run) is None:
            log(f"standalone: {run.name}: its search chose no arch meeting the measured budget; skipped")
            continue
        todo.append(run)
    log(f"standalone: {len(runs) - len(todo)} of {len(runs)} runs done or skipped; {len(todo)} to train, "
        f"{STANDALONE_AT_ONCE} at once")
    (c.out / "standalone").mkdir(parents=True, exist_ok=True)
    common.run_at_once(todo, lambda run: train_in_child(c, run), STANDALONE_AT_ONCE)
    c.done("standalone", {"runs": len(runs), "full": c.full, "commit": code_commit()})


def run_table6(c: Claim) -> None:
    """bench/search_strategies.py on this supernet and the 1.0x budgets (its own resumable runs)."""
    import search_strategies

    folder = c.out / "table6"
    results = folder / "search_strategies.json"
    if "table6" in c.record and readable_json(results):
        return
    budgets = c.record["budgets"]
    folder.mkdir(parents=True, exist_ok=True)
    search_strategies.main([
        "--checkpoint", str(c.checkpoint), "--supernet", SUPERNET, "--lut", str(lut_file()),
        "--params-budget", repr(budgets["params_budget"]), "--latency-budget-ms",
        repr(budgets["latency_budget_ms"]["1.0"]), "--evaluations", str(TABLE6_EVALUATIONS),
        "--seeds", ",".join(map(str, TABLE6_SEEDS)), "--out", str(folder), "--results", str(results),
        "--benchmarks-file", str(folder / "section.md")])
    c.done("table6", {"results": public_path(results), "commit": code_commit()})


# ---------------------------------------------------------------------------------------------------
# Report


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def latency_of(out: Path, key: str) -> dict[str, dict[str, list[Any]]]:
    """One arm key's latency in `latency` then `latency2` (as far as measured): {"latency_ratio": {backend:
    [median / the peer's median]}, "latency_ms": {backend: [median, p10, p90]}}."""
    ratios: dict[str, list[float]] = {b: [] for b in LATENCY_BACKENDS}
    spread: dict[str, list[list[float]]] = {b: [] for b in LATENCY_BACKENDS}
    for stage in ("latency", "latency2"):
        record = _read(out / f"{stage}.json")
        if record is None:
            continue
        check_latency_file(record, out / f"{stage}.json")
        for backend, entry in record["backends"].items():
            if key in entry["models"]:
                mine, peer = entry["models"][key], entry["models"]["peer"]
                ratios[backend].append(mine["median_ms"] / peer["median_ms"])
                spread[backend].append([mine.get(k) for k in ("median_ms", "p10_ms", "p90_ms")])
    return {"latency_ratio": ratios, "latency_ms": spread}


def arm_record(out: Path, arm: str, tests: Sequence[dict[str, Any]], select: Mapping[str, Any]) -> dict[str, Any]:
    """One arm of the results: per-seed test top-1, arch, params, latency ratios, inherited numbers."""
    mine = sorted((t for t in tests if t["arm"] == arm), key=lambda t: t["seed"])
    top1 = [t["test_top1"] for t in mine]
    entry: dict[str, Any] = {"seeds": [t["seed"] for t in mine], "test_top1": top1,
                             "mean": statistics.mean(top1) if top1 else None,
                             "sd": statistics.stdev(top1) if len(top1) > 1 else None,
                             "params": mine[0]["params"] if mine else None, **latency_of(out, arm)}
    if arm == "peer":
        recipe_run = (_read(RECIPE_JSON) or {}).get("peer") or {}
        entry.update(arch=PEER, reused_seed0=any(t["seed"] == 0 and t["reused"] for t in mine),
                     recipe_run={key: recipe_run.get(key) for key in ("arm", "val_top1", "test_top1")})
    else:
        chosen = select.get(search_name(arm_factor(arm)), {})
        inherited = chosen.get("inherited")
        entry.update(arch=chosen.get("chosen"), inherited=inherited,
                     params=entry["params"] or (inherited or {}).get("params"),  # the search counted them
                     selection_measured_ratio=next((r["measured"]["median_ms"] / chosen["peer_measured"]["median_ms"]
                                                    for r in chosen.get("candidates", []) if r["meets"]), None))
    return entry


def random_record(out: Path, tests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    control = _read(out / "random.json") or {"archs": []}
    by_index = {t["index"]: t for t in tests if t["arm"] == "random_1.0x"}
    rows = control["archs"]
    latency = [latency_of(out, f"random_1.0x/{i}") for i in range(len(rows))]
    top1 = [by_index[i]["test_top1"] for i in range(len(rows)) if i in by_index]
    complete = bool(rows) and len(top1) == len(rows)
    return {"test_top1": [by_index[i]["test_top1"] if i in by_index else None for i in range(len(rows))],
            "arch": [r["arch"] for r in rows], "params": [r["params"] for r in rows],
            # the mean and sd over archs once every arch has one (two of five are no spread to read);
            # `best` is the best so far
            "sampling_ratio": [r["ratio"] for r in rows], "mean": statistics.mean(top1) if complete else None,
            "sd": statistics.stdev(top1) if complete and len(top1) > 1 else None, "best": max(top1, default=None),
            **{kind: {b: [one[kind][b] for one in latency] for b in LATENCY_BACKENDS}
               for kind in ("latency_ratio", "latency_ms")},
            "measured_to_accept": len(control.get("tried", []))}


def paired_by_seed(tests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired image-level bootstrap of searched 1.0x seed s vs peer seed s (reported, not deciding)."""
    from autovit_ray.stats import paired_difference

    by = {(t["arm"], t["seed"]): t for t in tests}
    pairs = []
    for seed in SEARCHED_SEEDS:
        a, b = by.get(("searched_1.0x", seed)), by.get(("peer", seed))
        if a and b:
            d = paired_difference([ch == "1" for ch in a["correct"]], [ch == "1" for ch in b["correct"]])
            pairs.append({"seed": seed, **d})
    return pairs


def collect(out: Path) -> dict[str, Any]:
    """The results record from the artifacts (whatever exists)."""
    record = _read(out / "claim.json") or {}
    tests = [json.loads(p.read_text()) for p in sorted((out / "standalone").glob("*.test.json"))]
    peer = next((t for t in tests if t["arm"] == "peer" and t["seed"] == 0), None)
    if peer is not None:
        check_same_recipe(peer["config"], {t["run"]: t["config"] for t in tests if t is not peer})
    select = record.get("select", {})
    arms = {arm: arm_record(out, arm, tests, select) for arm in ARMS if arm != "random_1.0x"}
    arms["random_1.0x"] = random_record(out, tests)
    searched = arms["searched_1.0x"]
    inherited = (searched.get("inherited") or {}).get("test_top1")
    randoms = arms["random_1.0x"]["test_top1"]
    # "beats random" is read against every random arch, so only once all of them have a score
    complete = bool(randoms) and None not in randoms
    found = verdict(arms["peer"]["test_top1"], searched["test_top1"], inherited,
                    arms["random_1.0x"]["best"] if complete else None)
    found["sentence"] = verdict_sentence(found, (len(searched["test_top1"]), len(arms["peer"]["test_top1"])),
                                         searched["latency_ratio"])
    found["paired_by_seed"] = paired_by_seed(tests)
    found["versus_random"] = (versus_random(searched["test_top1"], arms["peer"]["test_top1"], randoms)
                              if complete and searched["test_top1"] else None)
    found["budget_met"] = {f"{arm}/{b}": max(r) <= arm_factor(arm) if len(r) == 2 else None  # None: not yet twice
                           for arm in ("searched_1.0x", "searched_0.8x")
                           for b, r in arms[arm]["latency_ratio"].items()}
    choice = _read(RECIPE_JSON) or {}
    return {"recipe": {**(choice.get("choice") or {}), "input_profile": INPUT_PROFILE, "resolution": RESOLUTION,
                       "peer": PEER, "min_tokens": MIN_TOKENS},
            "epochs": EPOCHS, "budgets": record.get("budgets"), "first_budgets": record.get("first_budgets"),
            "arms": arms, "verdict": found,
            "supernet": searched_supernet(record),
            "truth_check": truth_check(out, tests, searched_supernet(record)),
            "table6": table6_record(out), "fronts": {search_name(f): latency_front(out, f) for f in FACTORS},
            "latency_hosts": latency_hosts(out),
            "commits": stage_commits(record, tests), "code_runs": record.get("code_runs", []),
            "environment": common.environment(), "updated": time.strftime("%Y-%m-%d %H:%M")}


def searched_supernet(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The supernet the searches read: where it came from, its in-band tau against issue 30's truth (the
    claim quotes it, whatever it is) and, where it was trained again on a new machine, how far it repeats
    issue 30's training. `tau_in_band` is this supernet's own: issue 30's where the training repeats it,
    else the one scored here (`run_supernet`); `issue30_tau_in_band` is issue 30's."""
    source = (record.get("budgets") or {}).get("supernet_source")
    if source is None:
        return None
    fidelity = _read(FIDELITY_JSON) or {}
    issue30 = (fidelity.get("supernets") or {}).get(source) or {}
    again = record.get("supernet") or {}
    here = again.get("truth_fidelity") if source == again.get("source") else None
    own = here or (issue30 if not again.get("trained_again") or repeats_issue30(again) else {})
    return {"source": source, "tau_in_band": own.get("tau_in_band"), "tau_in_band_ci": own.get("tau_in_band_ci"),
            "scored_here": here is not None, "issue30_tau_in_band": issue30.get("tau_in_band"),
            "issue30_tau_in_band_ci": issue30.get("tau_in_band_ci"),
            "truth_epochs": (fidelity.get("standalone") or {}).get("epochs"),
            "macs_tau_in_band": fidelity.get("macs_tau_in_band"),
            "tau_over_macs": own.get("tau_over_macs"), "tau_over_macs_ci": own.get("tau_over_macs_ci"),
            "trained_again": bool(again.get("trained_again")), "same_per_epoch": again.get("same_per_epoch")}


def supernet_sentence(s: Mapping[str, Any]) -> str:
    repeated = s["same_per_epoch"]
    if s["trained_again"] and repeated:
        text = (f"The searches read issue 30's chosen `{s['source']}` supernet, trained again on a new machine "
                f"(checkpoints are not kept) with the same command and settings: {repeated['same']} of its "
                f"{repeated['epochs']} epochs {'has' if repeated['same'] == 1 else 'have'} the same validation "
                "numbers as the one issue 30 scored, to every digit" + ("." if repeated["same"] == repeated["epochs"] else
                           ", so issue 30's tau does not describe it."))
    elif s["source"] == "--supernet":
        return "The searches read a supernet given with --supernet, which issue 30 did not score."
    else:
        text = f"The searches read issue 30's chosen `{s['source']}` supernet."
    if s["tau_in_band"] is None:
        return text + (" It was not scored against issue 30's truth yet." if s["trained_again"] else
                       " Issue 30 did not score it.")
    low, high = s["tau_in_band_ci"] or (None, None)
    how = (f"Scored here against issue 30's truth ({s['truth_epochs']}-epoch stand-alone runs), as issue 30 scored "
           "its supernets, it" if s["scored_here"] else "It")
    text += (f" {how} ranks stand-alone accuracy inside the peer's latency band at Kendall tau "
             f"{s['tau_in_band']:.2f} [{_f(low)}, {_f(high)}] (MACs alone: {_f(s['macs_tau_in_band'])}")
    if s["scored_here"] and s["issue30_tau_in_band"] is not None:
        i_low, i_high = s["issue30_tau_in_band_ci"] or (None, None)
        text += f"; issue 30's training of it: {s['issue30_tau_in_band']:.2f} [{_f(i_low)}, {_f(i_high)}]"
    guide = ("its interval includes zero: a weak guide at best, which the random control checks"
             if low is None or low <= 0 else "its interval excludes zero")
    text += f"): {guide}."
    if s["tau_over_macs"] is not None:
        # over the whole truth, on the same resamples: does it rank better than counting MACs?
        o_low, o_high = s["tau_over_macs_ci"] or (None, None)
        than = ("it is not shown to rank better than counting MACs" if o_low is None or o_low <= 0 else
                "it ranks better than counting MACs")
        text += (f" Over the whole truth its tau minus MACs' is {_signed(s['tau_over_macs'])} "
                 f"[{_signed(o_low)}, {_signed(o_high)}]: {than}.")
    return text


def arm_key(test: Mapping[str, Any]) -> str:
    """The arm key of a stand-alone run's record: its arm, and for a random arch `random_1.0x/<i>`."""
    return f"{test['arm']}/{test['index']}" if test["index"] is not None else test["arm"]


def truth_check(out: Path, tests: Sequence[Mapping[str, Any]], supernet: Mapping[str, Any] | None,
                resamples: int = 10_000) -> dict[str, Any] | None:
    """Issue 30's 15-epoch truth checked at 30 epochs: how well the supernet's inherited validation top-1
    ranks the subnet arms' 30-epoch stand-alone test top-1 (seed means), beside the searched supernet's
    in-band tau against the truth (`searched_supernet`). None before the `inherited` stage. Read only once
    every subnet arm has a score: the first few (whichever finished first) are not the check, and their
    bootstrap is barely an interval (three concordant points resample to tau 1 on every draw)."""
    from autovit_ray.stats import rank_correlation

    inherited = _read(out / "inherited.json")
    if inherited is None:
        return None
    alone: dict[str, list[float]] = {}
    for t in tests:
        if t["arm"] != "peer":
            alone.setdefault(arm_key(t), []).append(t["test_top1"])
    subnets = [{"key": key, "inherited_val_top1": entry["val_top1"], "standalone_test_top1": statistics.mean(alone[key]),
                "seeds": len(alone[key])} for key, entry in inherited["subnets"].items() if key in alone]
    truth = None if not supernet or supernet["tau_in_band"] is None else {
        "supernet": supernet["source"], "epochs": supernet["truth_epochs"], "tau_in_band": supernet["tau_in_band"],
        "tau_in_band_ci": supernet["tau_in_band_ci"]}
    found: dict[str, Any] = {
        "subnets": subnets, "standalone_epochs": EPOCHS, "kendall_tau": None, "tau_ci": None, "spearman_rho": None,
        "truth": truth, "intervals_overlap": None, "arms": len(inherited["subnets"])}
    if len(subnets) == len(inherited["subnets"]) >= 3:
        ranks = rank_correlation([s["inherited_val_top1"] for s in subnets],
                                 [s["standalone_test_top1"] for s in subnets], resamples=resamples, seed=0)
        # no interval where every resample ranks alike (a perfectly ordered sample: [1, 1] bounds nothing)
        found.update(kendall_tau=ranks["kendall_tau"], tau_ci=list(ranks["kendall_tau_ci"] or []) or None,
                     spearman_rho=ranks["spearman_rho"])
    if found["tau_ci"] and truth and truth.get("tau_in_band_ci"):
        (low, high), (truth_low, truth_high) = found["tau_ci"], truth["tau_in_band_ci"]
        found["intervals_overlap"] = low <= truth_high and truth_low <= high
    return found


def truth_check_sentence(check: Mapping[str, Any]) -> str | None:
    """The check in one sentence (None before any subnet arm has a stand-alone score)."""
    if check["kendall_tau"] is None:
        if not check["subnets"]:
            return None
        return (f"Issue 30's 15-epoch truth checked at {check['standalone_epochs']} epochs: {len(check['subnets'])} "
                f"of the {check['arms']} subnet arms trained so far; the check waits for all of them.")
    interval = ("[{:.2f}, {:.2f}]".format(*check["tau_ci"]) if check["tau_ci"] else
                "(no bootstrap interval: every resample of a sample this ordered ranks alike)")
    text = (f"Issue 30's 15-epoch truth checked at {check['standalone_epochs']} epochs: over the "
            f"{len(check['subnets'])} subnet arms trained here (searched and random, all within the 1.0x latency "
            f"budget), the supernet's inherited validation top-1 ranks their stand-alone test top-1 at Kendall "
            f"tau {check['kendall_tau']:.2f} {interval}")
    truth = check["truth"]
    if not truth or truth.get("tau_in_band") is None:
        return text + "; no truth of issue 30 for this supernet to set it beside."
    t_low, t_high = truth.get("tau_in_band_ci") or (None, None)
    overlap = {True: "the intervals overlap", False: "the intervals do not overlap", None: "no interval to compare"}
    return (text + f", against the {truth['epochs']}-epoch truth's in-band tau {truth['tau_in_band']:.2f} "
            f"[{_f(t_low)}, {_f(t_high)}]: {overlap[check['intervals_overlap']]} (a few points make a wide interval).")


def table6_record(out: Path) -> dict[str, Any] | None:
    """bench/search_strategies.py's results on this supernet, less the per-evaluation curves."""
    found = _read(out / "table6" / "search_strategies.json")
    if found is None:
        return None
    return {**{k: found.get(k) for k in ("evaluations", "seeds", "reach", "inputs")},
            "runs": [{k: v for k, v in run.items() if k != "curve"} for run in found["runs"]]}


def stage_commits(record: Mapping[str, Any], tests: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """The code commit of every stage, each search and selection, and each stand-alone run."""
    found = {stage: entry.get("commit") for stage, entry in record.items() if isinstance(entry, dict)
             and "commit" in entry}
    for stage in ("search", "select"):
        found.update({f"{stage}/{name}": entry.get("commit") for name, entry in record.get(stage, {}).items()})
    return found | {f"standalone/{t['run']}": t["commit"] for t in tests}


def latency_front(out: Path, factor: float) -> list[dict[str, Any]]:
    """A search's Pareto front in (table latency, inherited validation top-1), by latency. The search's own
    front is over three objectives (accuracy, latency, parameters), whose plane view zigzags: an arch with
    fewer parameters stays on it however slow it is for its accuracy."""
    from autovit_ray.search.pareto import pareto_front

    found = (_read(search_results(out, factor)) or {}).get("pareto_front", [])
    kept = pareto_front([(-e["fitness"], e["latency"]) for e in found])
    return sorted(({"latency_ms": found[i]["latency"], "val_top1": found[i]["fitness"]} for i in kept),
                  key=lambda e: e["latency_ms"])


def report(out: Path) -> dict[str, Any]:
    """bench/results/cifar10_claim.json, the plot and the BENCHMARKS.md section from what exists; and
    the artifacts folder's report page (`experiment_page`)."""
    result = public_paths(collect(out))
    write_json(RESULTS_JSON, result)
    keep_files(kept_files(out))
    if any(result["arms"][arm]["test_top1"] for arm in ARMS):
        plot(result, PNG)
    replace_markdown_section(BENCHMARKS, SECTION, section(result))
    experiment_page(out, result)
    return result


def comparison_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The arms as rows of the product's comparison table (`compare.json`): the seed mean of each arm and
    each random arch, with the first measurement's torch-cpu median and the mean ratio of both; only
    arms with a test score and a latency."""
    def row(model: str, kind: str, top1: list[float], params: int | None, ratios: list[float],
            spread: list[list[float]], note: str) -> dict[str, Any] | None:
        if not top1 or not ratios or not spread:
            return None
        median, p10, p90 = spread[0]
        return {"model": model, "kind": kind, "resolution": RESOLUTION, "test_top1": statistics.mean(top1),
                "params": params, "macs": None, "lut_latency_ms": None, "latency_ms": median, "latency_p10_ms": p10,
                "latency_p90_ms": p90, "latency_ratio": statistics.mean(ratios), "note": note}

    def seeds_note(a: Mapping[str, Any]) -> str:
        shown = " / ".join(f"{t:.2f}" for t in a["test_top1"])
        return f"seeds {a['seeds']}: {shown}" + (f"; sd {a['sd']:.2f}" if a.get("sd") is not None else "")

    arms = result["arms"]
    rows = [row(PEER if arm == "peer" else arm, "reference" if arm == "peer" else "searched", arms[arm]["test_top1"],
                arms[arm]["params"], arms[arm]["latency_ratio"]["torch-cpu"], arms[arm]["latency_ms"]["torch-cpu"],
                seeds_note(arms[arm])) for arm in ("peer", "searched_1.0x", "searched_0.8x")]
    randoms = arms["random_1.0x"]
    for i, top1 in enumerate(randoms["test_top1"]):
        rows.append(row(f"random_1.0x/{i}", "random", [top1] if top1 is not None else [], randoms["params"][i],
                        randoms["latency_ratio"]["torch-cpu"][i], randoms["latency_ms"]["torch-cpu"][i],
                        "drawn uniformly, 0.9-1.0x the peer's latency; seed 0"))
    return [r for r in rows if r is not None]


def experiment_page(out: Path, result: Mapping[str, Any]) -> Path | None:
    """`<out>/report.html`, the product's page of the artifacts folder: its searches, and the arms as its
    comparison (`compare/compare.json`, the verdict on top). None before the searches ran."""
    from autovit_ray.compare import write_outputs
    from autovit_ray.experiment import Experiment
    from autovit_ray.report import write_report

    layout = Experiment(out)
    if not layout.searches_dir.is_dir():
        return None
    rows = comparison_rows(result)
    if rows:
        write_outputs(rows, layout.compare_dir, {"backend": "torch-cpu, batch 1, 1 thread (first measurement)",
                                                 "summary": result["verdict"]["sentence"], "source": "cifar10_claim"})
    return write_report(out, log=lambda line: None)


def _mean_ratio(ratios: Mapping[str, list[float]]) -> float | None:
    found = ratios.get("torch-cpu") or []
    return statistics.mean(found) if found else None


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """Test top-1 vs measured latency / the peer's: peer seeds, searched seeds, random archs, and the
    searches' Pareto fronts of inherited validation top-1 (table ms / the peer's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6))
    arms = result["arms"]
    ax.scatter([1.0] * len(arms["peer"]["test_top1"]), arms["peer"]["test_top1"], marker="*", s=120, color="black",
               label=f"{PEER} (peer), per seed")
    for arm, colour in (("searched_1.0x", "tab:blue"), ("searched_0.8x", "tab:cyan")):
        x = _mean_ratio(arms[arm]["latency_ratio"])
        if x is not None and arms[arm]["test_top1"]:
            ax.scatter([x] * len(arms[arm]["test_top1"]), arms[arm]["test_top1"], s=30, color=colour,
                       label=f"{arm}, per seed")
    randoms = arms["random_1.0x"]
    points = [(statistics.mean(r), t) for r, t in zip(randoms["latency_ratio"]["torch-cpu"], randoms["test_top1"])
              if r and t is not None]
    if points:
        ax.scatter(*zip(*points), s=24, marker="s", color="tab:gray", label="random archs at 0.9-1.0x")
    for arm, colour in (("searched_1.0x", "tab:blue"), ("searched_0.8x", "tab:cyan")):
        x = _mean_ratio(arms[arm]["latency_ratio"])
        inherited = (arms[arm].get("inherited") or {}).get("test_top1")
        if x is not None and inherited is not None:
            ax.scatter([x], [inherited], s=40, facecolors="none", edgecolors=colour, label=f"{arm}, inherited weights")
    peer_ms = (result.get("budgets") or {}).get("peer_lut_ms")
    for (name, front), colour in zip(result["fronts"].items(), ("tab:blue", "tab:cyan")):
        if front and peer_ms:
            ax.step([e["latency_ms"] / peer_ms for e in front], [e["val_top1"] for e in front], where="post", lw=0.8,
                    color=colour, alpha=0.6, label=f"{name} Pareto front (inherited val top-1, table ms)")
    ax.set_xlabel("latency / the peer's (torch-cpu, batch 1, 1 thread; mean of the measurements)")
    ax.set_ylabel("top-1 % (test, stand-alone; fronts: validation, inherited)")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def smaller_sentence(arm: Mapping[str, Any], peer: Mapping[str, Any]) -> str | None:
    """The searched 0.8x model against the peer: the paper's headline is a faster model that is also more
    accurate. A Welch interval with two seeds a side; with one seed of it, the peer's seed sd is the scale
    to read the difference against. None before it has a score."""
    scores, peer_scores = arm["test_top1"], peer["test_top1"]
    if not scores or not peer_scores:
        return None
    difference = statistics.mean(scores) - statistics.mean(peer_scores)
    text = (f"The searched 0.8x model: {statistics.mean(scores):.2f} % test top-1 "
            f"({len(scores)} seed{'s' if len(scores) > 1 else ''}), {difference:+.2f} points against the peer's seed "
            f"mean {statistics.mean(peer_scores):.2f}")
    w = welch_or_none(scores, peer_scores)
    if w is not None:
        reading = ("includes zero: no difference detected" if w["low"] <= 0 <= w["high"] else
                   "above zero: more accurate" if w["low"] > 0 else "below zero: less accurate")
        text += f", Welch 95 % interval {w['low']:+.2f} to {w['high']:+.2f} ({reading})"
    elif len(peer_scores) >= 2:
        text += (f"; one seed gives no interval, and the peer's seed sd, {statistics.stdev(peer_scores):.2f} points, "
                 "is the scale to read the difference against")
    where = "; ".join(f"on {backend} {latency_words(ratios, arm_factor('searched_0.8x'))}"
                      for backend, ratios in arm["latency_ratio"].items() if ratios)
    return text + (f"; {where}." if where else ".")


def inherited_sentence(inherited: float, peer: Mapping[str, Any]) -> str:
    """The paper's verdict (inherited weights, no retraining) against the peer's stand-alone seeds: where
    the inherited test top-1 lies beside their mean and their spread."""
    seeds = peer["test_top1"]
    where = ("above every peer seed" if inherited > max(seeds) else "below every peer seed" if inherited < min(seeds)
             else f"inside the peer's seed spread ({min(seeds):.2f}-{max(seeds):.2f})")
    side = "above" if inherited > statistics.mean(seeds) else "not above"
    count = f"{len(seeds)} seeds" if len(seeds) > 1 else "1 seed"
    return (f"Inherited weights: the searched 1.0x model scores {inherited:.2f} % on the test set against the "
            f"peer's seed mean {_f(peer['mean'])} (sd {_f(peer['sd'])}, {count}): {side} the peer's mean, {where}.")


def budgets_sentence(budgets: Mapping[str, Any], first: Mapping[str, Any] | None) -> str:
    """How the searches' budgets were set, and what a first attempt under other budgets found."""
    calibration = budgets.get("calibration")
    if not calibration:
        text = (f"Budgets: the peer is {budgets['peer_lut_ms']:.3f} latency-table ms (measured beside random "
                f"subnets, bench/supernet_fidelity.py's band) and {budgets['peer_params']:,} parameters; searches "
                f"under 1.0x and 0.8x of that latency and <= {PARAMS_FACTOR}x its parameters.")
    else:
        per = ", ".join(f"{float(f):.1f}x {cal['budget_ms']:.3f} ms (level {cal['level']:.3f} over {cal['subnets']} "
                        f"subnets: {cal['subnets_from']})" for f, cal in calibration.items())
        text = (f"Budgets: <= {PARAMS_FACTOR}x the peer's {budgets['peer_params']:,} parameters, and a latency-table "
                f"budget {1 - budgets['aim']:.0%} under where subnets measure 1.0x and 0.8x the peer at the claim's "
                "setting (torch-cpu, 1 thread; the margin because the peer's measurement moves by about that between "
                "runs): the peer measured beside subnets near each budget in one run, their median table / measured "
                f"ratio (level) times the peer's measured latency: {per}.")
    if first:
        ranges = "; ".join(f"{name}: {min(sel['ratios']):.3f}-{max(sel['ratios']):.3f}x"
                           for name, sel in first["select"].items())
        text += (f" A first attempt set the table budget from bench/supernet_fidelity.py's band (the peer beside "
                 f"random subnets of every size, at the table's 2 threads: {first['peer_lut_ms']:.3f} ms): each "
                 f"search's {SELECTION_CANDIDATES} best by validation then measured above its budget x the peer "
                 f"({ranges}), so the fixed selection rule chose none. Those searches and everything drawn after "
                 "them were set aside before any was trained, without reading their test scores, and run again under "
                 "the budgets above.")
    return text


def peer_seed0_sentence(peer: Mapping[str, Any]) -> str:
    if peer["reused_seed0"]:
        return "The peer's seed 0 is the recipe issue's 30-epoch run."
    text = (f"The peer's seed 0 is trained here, with {STANDALONE_THREADS} torch thread (the recipe issue's run was not "
            "on this machine)")
    here = dict(zip(peer["seeds"], peer["test_top1"], strict=True)).get(0)
    before = (peer.get("recipe_run") or {}).get("test_top1")
    if here is None or before is None:
        return text + "."
    return (text + f": it scores {here:.2f} % test top-1 where the recipe issue's run of the same seed and recipe "
            f"(another thread count, older code) scored {before:.2f}; across those the same seed is another draw of "
            "the training noise, not a repeat.")


def section(r: Mapping[str, Any]) -> str:
    v = r["verdict"]
    lines = [SECTION, "",
             f"Command (resumable): `{COMMAND}`, from a pinned worktree; this section, `bench/results/cifar10_claim.json` "
             "and the plot: `--report-only`. One recipe for every arm (the recipe issue's choice: "
             f"{(r['recipe'] or {}).get('adaptation')} + {(r['recipe'] or {}).get('recipe')}, input profile "
             f"`{INPUT_PROFILE}`, {RESOLUTION} px), {r['epochs']} epochs stand-alone from scratch, full 10k test set.",
             "", code_line({"code_runs": r["code_runs"]}), "", f"**Verdict.** {v['sentence']}", "",
             "| arm | seeds / archs | test top-1 % per seed (per arch) | mean | sd (over seeds; random: over archs) | "
             "inherited test top-1 | params | torch-cpu x peer | onnxruntime x peer |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        a = r["arms"][arm]
        per = " / ".join(_f(t) for t in a["test_top1"]) or "–"
        ratios = {b: " / ".join(_f(x) if isinstance(x, float) else "–" for x in (
            a["latency_ratio"][b] if arm != "random_1.0x" else [statistics.mean(p) if p else None
                                                                for p in a["latency_ratio"][b]])) or "–"
                  for b in LATENCY_BACKENDS}
        params = a["params"] if arm != "random_1.0x" else (max(a["params"]) if a["params"] else None)
        shown = "–" if params is None else ("≤ " if arm == "random_1.0x" else "") + f"{params / 1e6:.3f} M"
        kept = (a.get("inherited") or {}).get("test_top1")
        scored = sum(x is not None for x in a["test_top1"])
        count = f"{scored} of {len(a['test_top1'])}" if scored < len(a["test_top1"]) else str(scored)
        lines.append(f"| {arm} | {count} | {per} | {_f(a['mean'])} | {_f(a['sd'])} | {_f(kept)} | "
                     f"{shown} | {ratios['torch-cpu']} | {ratios['onnxruntime']} |")
    searched = r["arms"]["searched_1.0x"]
    inherited = (searched.get("inherited") or {}).get("test_top1")
    budgets = r["budgets"]
    if budgets:
        lines += ["", budgets_sentence(budgets, r.get("first_budgets"))]
    if r.get("supernet"):
        lines.append(supernet_sentence(r["supernet"]))
    if r["arms"]["peer"]["seeds"]:
        lines.append(peer_seed0_sentence(r["arms"]["peer"]))
    lines += ["", "Latency: each measurement times every arm beside the peer in one process (batch 1, 1 thread, "
              "wall clock, interleaved rounds; medians, p10-p90 in the JSON); the second ran at least an hour after "
              "the first, in another process, and a budget holds only when both meet it. The random archs list one "
              "ratio per arch (the mean of the measurements). Inherited: the search's weights, no retraining, "
              "BatchNorm recalibrated.", ""]
    hosts = r.get("latency_hosts") or {}
    if hosts:
        lines += ["Hosts of the latency measurements: " + "; ".join(
            f"{'first' if stage == 'latency' else 'second'}: {host or 'not recorded'}" for stage, host in hosts.items())
            + " (each ratio to the peer is timed on one host, in one process).", ""]
    met = [f"{key} {'not measured twice yet' if ok is None else 'yes' if ok else 'no'}"
           for key, ok in v["budget_met"].items() if r["arms"][key.split("/")[0]]["arch"]]
    if met:
        lines.append("Latency budget met in both measurements: " + ", ".join(met) + ".")
    if inherited is not None and r["arms"]["peer"]["test_top1"]:
        lines.append(inherited_sentence(inherited, r["arms"]["peer"]))
    smaller = smaller_sentence(r["arms"]["searched_0.8x"], r["arms"]["peer"])
    if smaller:
        lines.append(smaller)
    randoms = r["arms"]["random_1.0x"]["test_top1"]
    if v["versus_random"]:  # set with beats_random, once every random arch has a score
        lines.append(random_sentence(v["versus_random"], searched["mean"], r["arms"]["random_1.0x"]["best"],
                                     len(randoms)))
    elif any(t is not None for t in randoms):
        lines.append(f"Searched vs random: {sum(t is not None for t in randoms)} of the {len(randoms)} random archs "
                     f"trained so far (best {_f(r['arms']['random_1.0x']['best'])}); the reading waits for all of them.")
    check = r.get("truth_check") and truth_check_sentence(r["truth_check"])
    if check:
        lines.append(check)
    for d in v["paired_by_seed"]:
        lines.append(f"- seed {d['seed']}: paired image-level difference {d['difference']:+.2f} [{d['low']:+.2f}, "
                     f"{d['high']:+.2f}] (bootstrap over the {d['images']:,} test images; McNemar exact p = "
                     f"{d['mcnemar_p']:.2g}; reported, not deciding)")
    if r["table6"]:
        import search_strategies

        table6 = r["table6"]
        lines += ["", f"Table 6 on this supernet (bench/search_strategies.py; {len(table6['seeds'])} seeds x "
                  f"{table6['evaluations']} evaluations, selected on validation half 0, re-scored on half 1 and the "
                  "test set):", "",
                  *search_strategies.strategy_summary(r["table6"]["runs"]), "",
                  *([search_strategies.reach_sentence(table6["reach"]), ""] if table6.get("reach") else []),
                  search_strategies.held_out_reading(r["table6"]["runs"])]
    if any(r["arms"][arm]["test_top1"] for arm in ARMS):
        lines += ["", f"![test top-1 vs measured latency]({PNG_IN_REPO.as_posix()})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------


def run_report(c: Claim) -> None:
    report(c.out)


STAGE_RUNNERS: dict[str, Callable[[Claim], None]] = {
    "peer": run_peer, "supernet": run_supernet, "budgets": run_budgets, "search": run_search,
    "select": run_select, "random": run_random, "inherited": run_inherited,
    "latency": lambda c: run_latency(c, "latency"), "standalone": run_standalone, "table6": run_table6,
    "latency2": lambda c: run_latency(c, "latency2"), "report": run_report,
}


@cli_main(kept="every finished stage and each training's last epoch: rerun the same command to continue",
          bad_input=(Mismatch,))
def main(argv: list[str] | None = None) -> int:
    parser = staged_parser(__doc__, "cifar10_claim", STAGES)
    parser.add_argument("--full", action="store_true", help="3 seeds of the 0.8x arch (default 1)")
    parser.add_argument("--supernet", type=Path, default=None,
                        help="a supernet checkpoint (xxs, cifar10-p1) instead of the one issue 30 chose")
    parser.add_argument("--measure-latency", choices=("latency", "latency2"), default=None,
                        help="internal: one latency measurement in this process (the stages start it)")
    parser.add_argument("--train-run", default=None, metavar="RUN",
                        help="internal: train and score one stand-alone run in this process (the stage starts it)")
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    if args.report_only:
        report(out)
        return 0
    choice = recipe_choice()
    if args.measure_latency:
        measure_latency(out, args.measure_latency, choice)
        return 0
    supernet, needs_supernet = None, False
    if not args.train_run:
        # what an earlier machine measured, where this one lacks it: the latency table and band too
        restore_files({**fidelity_kept_files(bench_dir() / "supernet_fidelity"), **kept_files(out)})
        done = (_read(out / "claim.json") or {}).keys()
        needs_supernet = any(stage not in done for stage in SUPERNET_STAGES)
        if needs_supernet:
            supernet = find_supernet(args.supernet)  # refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    # a --train-run process reads the record and writes only its own score file
    record, save = common.open_record(out / "claim.json", report_only=bool(args.train_run))
    claim = Claim(out, args.data_dir.resolve(), supernet, choice, args.full, record, save, needs_supernet)
    if args.train_run:
        runs = {run.name: run for run in standalone_runs(args.full, RANDOM_ARCHS)}
        if args.train_run not in runs:
            raise ValueError(f"--train-run {args.train_run!r} is not a run of this experiment: {sorted(runs)}")
        train_one(claim, runs[args.train_run])
        return 0
    which = (f"{public_path(supernet[0])} ({supernet[1]})" if supernet else
             "not on this machine: the supernet stage trains it" if needs_supernet else "not needed (its stages are done)")
    log(f"cifar10_claim: supernet {which}, artifacts in {out}")
    with open(out / HOSTS_LOG, "a") as hosts:
        hosts.write(host_line(time.time()) + ", the driver started\n")
    for stage in STAGES[:STAGES.index(args.stop_after) + 1]:
        log(f"stage {stage}")
        STAGE_RUNNERS[stage](claim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
