"""One self-contained HTML page per experiment (`write_report`): the library of
`python -m autovit_ray.report` (its manual is the docstring of autovit_ray/report/cli.py).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..experiment import SEARCH_RESULTS, Experiment
from ..fidelity import REPORT_FILE, truth_ceiling
from ..fidelity.scan import SCAN_FILE

Log = Callable[[str], None]
CURVES = ("val_top1_smallest", "val_top1_largest", "val_top1_random_mean")  # drawn bold
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COMPARE_COLUMNS = ("model", "kind", "resolution", "test_top1", "params", "macs", "lut_latency_ms", "latency_ms",
                   "latency_p10_ms", "latency_p90_ms", "latency_ratio", "note")
CSS = """body{font-family:sans-serif;margin:2em auto;max-width:72em;color:#222}.wide{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:right}td.l{text-align:left;max-width:32em}th{background:#f0f0f0}img{max-width:100%}
.missing{color:#a40;font-family:monospace}.verdict{font-size:1.2em;font-weight:bold;border-left:4px solid #36c;
padding:.3em .8em;background:#eef3fb}.caption{color:#555;font-size:.9em}"""


class Missing(Exception):
    """A part of the page that cannot be drawn; its message is the line the page shows."""


def check_experiment(path: Path) -> Path:
    """`path` if it is an experiment directory, else ValueError saying what was expected."""
    markers = ", ".join(p.name for p in Experiment(path).markers())
    expected = f"an experiment directory (<output_dir>/<name>/ holding some of {markers})"
    if not path.exists():
        raise ValueError(f"{path} does not exist: expected {expected}")
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory: expected {expected}")
    if not any(marker.exists() for marker in Experiment(path).markers()):
        raise ValueError(f"{path} is not an experiment directory: it has none of {markers} "
                         "(expected <output_dir>/<name>/ of a pipeline, training or search run)")
    return path


def write_report(experiment_dir: Path, log: Log = print) -> Path:
    """Write `<experiment_dir>/report.html` (atomically) and return its path."""
    from ..io import atomic_write_text

    exp = check_experiment(Path(experiment_dir).expanduser())
    layout = Experiment(exp)
    compare_json = layout.compare_json
    compare = _section(log, "comparison", compare_json, lambda: _read_json(compare_json, "comparison table"))
    rows = [r for r in compare.get("rows") or [] if isinstance(r, dict)] if isinstance(compare, dict) else []
    sections = [("Stage timings", layout.summary_json, lambda: stage_timings(exp)),
                ("Training curves", layout.tracking_db, lambda: training_curves(exp, log)),
                ("Latency tables", layout.luts_dir, lambda: latency_tables(exp, log)),
                ("Searches", layout.searches_dir, lambda: searches(exp, rows, log)),
                ("Comparison", compare_json, lambda: comparison(exp, compare, log))]
    name = _esc(exp.resolve().name)
    body = [f"<h1>Experiment {name}</h1>",
            f"<p class=caption>{_esc(exp.resolve())}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]
    if isinstance(compare, dict) and isinstance(compare.get("summary"), str):  # the comparison's verdict, on top
        body.append(f"<p class=verdict>{_esc(compare['summary'])}</p>")
    scan_json = layout.fidelity_dir / SCAN_FILE  # optional, as the fidelity report: a section only when it ran
    if scan_json.is_file():
        sections.append(("Supernet scan", scan_json, lambda: supernet_scan(scan_json)))
    fidelity_json = layout.fidelity_dir / REPORT_FILE
    if fidelity_json.is_file():
        sections.append(("Rank fidelity", fidelity_json, lambda: rank_fidelity(fidelity_json)))
    for title, source, build in sections:
        body += [f"<h2>{title}</h2>", _section(log, title.lower(), source, build)]
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{name} report</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(layout.report_html, page)


class _Failed(str):
    """The HTML of a part that could not be drawn (its missing line)."""


def _section(log: Log, what: str, source: Path, build: Callable[[], Any]) -> Any:
    """Run one part; a failure becomes its missing line. Any exception, not only the expected ones:
    a malformed stage output (a JSON file of the wrong shape) must not cost the rest of the page."""
    try:
        return build()
    except Missing as exc:
        text = str(exc)
    except Exception as exc:
        text = f"{what}: {source} is unreadable ({type(exc).__name__}: {exc})"
    return _Failed(_note(log, text))


def _note(log: Log, text: str) -> str:
    """Log `missing: <text>` and return it as a line of the page."""
    log(f"missing: {text}")
    return f"<p class=missing>missing: {_esc(text)}</p>"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise Missing(f"{what}: no file {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Missing(f"{what}: {path} is unreadable ({type(exc).__name__}: {exc})") from None


def _num(value: Any) -> float | None:
    """A finite number from a number or numeric text (MLflow params are text), else None."""
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # text: left-aligned
        return f"<td class=l>{_esc('n/a' if value is None else value)}</td>"
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>" if abs(value) < 1e4 else f"<td>{value:,.0f}</td>"
    return f"<td>{value:,}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<div class=wide><table><tr>{head}</tr>{body}</table></div>"


def _figure(panels: int = 1, width: float = 5.0) -> Any:
    # The object API (no pyplot): no global backend switch and no figure registry to leak into; a
    # Figure saves PNG through Agg.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, 3.6))
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=96)
    return _png_tag(buf.getvalue(), alt)


def _png_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


# ---------------------------------------------------------------------------------------------------
# Sections: each returns its HTML or raises Missing


def stage_timings(exp: Path) -> str:
    summary = _read_json(Experiment(exp).summary_json, "stage timings")
    rows = [(s["stage"], s["status"], s["seconds"], s["budget_s"], s.get("last_ran_seconds"), s.get("last_ran"),
             "OVER BUDGET" if s.get("over_budget") else "") for s in summary["stages"]]
    return (f"<p>pipeline {_esc(summary.get('name', '?'))}: {_esc(summary.get('total_seconds', '?'))} s in all "
            "(a reused stage: what it took when it last ran)</p>"
            + _table(("stage", "status", "seconds", "budget (s)", "last ran (s)", "last ran at", ""), rows))


def _tracking(exp: Path) -> tuple[Any, dict[str, Any]]:
    """(MLflow client of the experiment, its training config); Missing when there is no store to read."""
    import yaml

    from ..adapters import default_tracking_uri, mlflow_client

    config_path = Experiment(exp).config_yaml
    if not config_path.is_file():
        raise Missing(f"training config: no file {config_path}")
    cfg = yaml.safe_load(config_path.read_text()) or {}
    uri = default_tracking_uri(exp, (cfg.get("mlflow") or {}).get("tracking_uri"))
    # MLflow would create an empty database where none is: look first, never write into the experiment.
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise Missing(f"MLflow tracking store: no file {uri[len('sqlite:///'):]}")
    return mlflow_client(uri), cfg


def training_curves(exp: Path, log: Log) -> str:
    from matplotlib.ticker import MaxNLocator

    parts, peers = [], []
    for path in sorted(exp.glob("references/*/history.json")):
        try:
            history = _read_json(path, "reference history")
            points = [(int(h["epoch"]), float(h["val_top1"])) for h in history if "val_top1" in h]
            if not points:
                raise ValueError("no epoch has a val_top1")
            peers.append((path.parent.name, points))
        except Missing as exc:
            parts.append(_note(log, str(exc)))
        except (TypeError, KeyError, ValueError) as exc:
            parts.append(_note(log, f"reference history: {path} is unreadable ({type(exc).__name__}: {exc})"))
    try:  # without the runs, a peer's curve is still worth drawing
        client, cfg = _tracking(exp)
        name = cfg.get("name", exp.name)
        experiment_name = (cfg.get("mlflow") or {}).get("experiment") or name
        found = client.get_experiment_by_name(experiment_name)
        runs = client.search_runs([found.experiment_id]) if found else []
        runs = [r for r in runs if r.data.tags.get("ray_run_name", "").startswith(f"{name}/")]
        if not runs:
            parts.append(_note(log, f"training curves: no training runs of {name!r} in MLflow experiment "
                                    f"{experiment_name!r} ({Experiment(exp).tracking_db})"))
    except Missing as exc:
        parts.append(_note(log, str(exc)))
        runs = []
    if not runs and not peers:
        return "".join(parts)
    runs.sort(key=lambda r: r.data.tags.get("supernet", ""))
    fig, axes = _figure(max(len(runs), 1), 4.5)
    rows = []
    for ax, run in zip(axes, runs or [None]):
        for key in sorted(k for k in (run.data.metrics if run else {}) if k.startswith("val_top1_")):
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            main = key in CURVES
            ax.plot([m.step for m in history], [m.value for m in history], marker="o", markersize=3,
                    label=key[len("val_top1_"):], linewidth=2 if main else 0.8, alpha=1 if main else 0.5)
        for peer, points in peers:
            ax.plot(*zip(*points), "k--", marker="s", markersize=3, label=f"{peer} (trained reference)")
        supernet = run.data.tags.get("supernet", "?") if run else "reference"
        ax.set(title=f"supernet {supernet}" if run else "trained reference", xlabel="epoch", ylabel="validation top-1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        if run:
            rows.append((supernet, run.info.status, *(run.data.metrics.get(k) for k in CURVES)))
    table = _table(("supernet", "MLflow status", *(f"last {k[len('val_top1_'):]} (%)" for k in CURVES)), rows)
    return "".join(parts) + _img(fig, "validation top-1 per epoch") + (table if rows else "")


def latency_tables(exp: Path, log: Log) -> str:
    from ..latency import LatencyTable
    from ..space import Arch

    paths = sorted(exp.glob("luts/*.parquet"))
    if not paths:
        raise Missing(f"latency tables: no luts/*.parquet in {exp}")
    def load(path: Path) -> tuple[Any, ...]:
        table = LatencyTable.load(path)
        refs = table.metadata.get("references") or []
        if not refs:
            raise Missing(f"latency table {path.stem}: {path} records no reference archs")
        measured = [float(r["measured_ms"]) for r in refs]
        predicted = [table.predict_latency(Arch.from_json(r["arch"])) for r in refs]
        mape = 100 * statistics.fmean(abs(p - m) / m for p, m in zip(predicted, measured))
        return path.stem, table.backend, table.device_id, len(refs), mape, measured, predicted

    # Each table on its own: a corrupt one must not hide the others.
    loaded = [_section(log, f"latency table {path.stem}", path, functools.partial(load, path))
              for path in paths]
    parts = [item for item in loaded if isinstance(item, _Failed)]
    tables = [item for item in loaded if not isinstance(item, _Failed)]
    if not tables:
        return "".join(parts)
    fig, axes = _figure(len(tables), 4.0)
    for ax, (stem, backend, _, n, mape, measured, predicted) in zip(axes, tables):
        ax.scatter(measured, predicted, s=12)
        ends = [min(measured + predicted), max(measured + predicted)]
        ax.plot(ends, ends, "k--", linewidth=1, label="y = x")
        ax.set(title=f"{stem}: MAPE {mape:.1f}% over {n} archs", xlabel=f"measured latency (ms, {backend})",
               ylabel="predicted latency (ms)")
        ax.legend(fontsize=7)
    table = _table(("table", "backend", "device", "reference archs", "MAPE (%)"), [t[:5] for t in tables])
    return "".join(parts) + _img(fig, "latency tables: predicted vs measured") + table


def _search_params(exp: Path, name: str) -> dict[str, str]:
    """The search's MLflow parameters (its budgets); {} when MLflow has none: the budget line is optional."""
    try:
        client, _ = _tracking(exp)
        found = client.get_experiment_by_name("autovit-search")  # autovit_ray.search.tracking.SEARCH_EXPERIMENT
        runs = client.search_runs([found.experiment_id], f"tags.search_name = '{name}' and tags.role = 'search'")
        return dict(runs[0].data.params) if runs else {}
    except Exception:
        return {}


def reference_stars(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, float, float]], str]:
    """[(model, table ms, test top-1)] of the trained reference models of the comparison, and the caption:
    a measured latency becomes table ms through the median LUT/measured ratio of the searched models
    (the table predicts another clock than the comparison's measurement). No stars when no ratio exists."""
    ratios = [lut / ms for r in rows if r.get("kind") == "searched"
              for lut, ms in [(_num(r.get("lut_latency_ms")), _num(r.get("latency_ms")))] if lut and ms]
    refs = [(r["model"], _num(r.get("latency_ms")), _num(r.get("test_top1")))
            for r in rows if r.get("kind") == "reference"]
    if not refs:
        return [], ""
    if not ratios:
        return [], "reference models not drawn: no searched model in the comparison has both LUT and measured latency."
    ratio = statistics.median(ratios)
    stars = [(model, ms * ratio, top1) for model, ms, top1 in refs if ms and top1 is not None]
    if not stars:
        return [], "reference models not drawn: none has a test top-1 (not trained here)."
    return stars, (f"&#9733; reference model: its test top-1 at its measured latency converted into table ms "
                   f"(x {ratio:.3g}: the median LUT/measured latency ratio of the {len(ratios)} searched models "
                   "in the comparison).")


def searches(exp: Path, compare_rows: Sequence[dict[str, Any]], log: Log) -> str:
    dirs = Experiment(exp).search_dirs()
    if not dirs:
        raise Missing(f"searches: no search/<name>/ in {exp}")
    # One section per search: a malformed results.json must not hide the other searches.
    return "".join(_section(log, f"search {f.name}", f / SEARCH_RESULTS,
                            functools.partial(search_plot, exp, f, compare_rows)) for f in dirs)


def search_plot(exp: Path, folder: Path, compare_rows: Sequence[dict[str, Any]]) -> str:
    from ..search.pareto import pareto_front
    from ..search.results import SearchReport

    path = folder / SEARCH_RESULTS
    report = SearchReport.from_dict(_read_json(path, f"search {folder.name} results"), path)
    points, best = [e for e in report.evaluated if _num(e.fitness) is not None], report.best
    # A search without a latency table records no latencies: then parameters are the cost axis.
    by_latency = bool(points) and all(_num(e.latency) is not None for e in points)
    # (the `is not None` filters drop nothing: every point has a fitness, and a latency when by_latency)
    xs = ([e.latency for e in points if e.latency is not None] if by_latency
          else [e.params / 1e6 for e in points])
    ys = [e.fitness for e in points if e.fitness is not None]
    front = sorted(pareto_front([(-y, x) for x, y in zip(xs, ys)]), key=lambda i: xs[i])
    fig, (ax,) = _figure(1, 6.0)
    ax.scatter(xs, ys, s=10, color="0.6", label=f"{len(points)} candidates")
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "C0-o", markersize=4, label="Pareto front")
    ax.scatter([b.latency_ms if by_latency else b.params / 1e6 for b in best], [b.val_top1 for b in best],
               s=90, facecolors="none", edgecolors="C3", linewidths=1.5, label=f"best {len(best)}")
    budget = _num(_search_params(exp, folder.name).get("latency_budget_ms" if by_latency else "params_budget"))
    if budget is not None:
        ax.axvline(budget if by_latency else budget / 1e6, color="C1", linestyle=":", label="budget")
    caption = "" if by_latency else "No LUT latencies recorded (searched without a latency table): plotted against parameters."
    if by_latency:
        stars, caption = reference_stars(compare_rows)
        for model, x, y in stars:
            ax.scatter([x], [y], marker="*", s=220, color="C2", label=model)
    ax.set_xlabel("LUT latency (ms)" if by_latency else "parameters (M)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(folder.name, fontsize=10)
    ax.legend(fontsize=7)
    table = _table(("rank", "model", "val top-1", "test top-1", "params", "LUT ms", "measured ms"),
                   [(b.rank, b.name, b.val_top1, b.test_top1, b.params, b.latency_ms, b.measured_latency_ms)
                    for b in best])
    selection = report.extra.get("measured_selection")
    return (f"<h3>{_esc(folder.name)}</h3>" + _img(fig, f"search {folder.name}")
            + (f"<p class=caption>{caption}</p>" if caption else "") + table
            + (measured_selection(selection) if selection else ""))


def measured_selection(selection: dict[str, Any]) -> str:
    """The candidates a search timed for its measured latency budget (`results.json` `measured_selection`)."""
    rows = selection["candidates"]
    within = sum(bool(r["within_budget"]) for r in rows)
    reference = selection.get("reference")  # a budget set by a reference model timed in the same run
    source = (f" ({float(reference['factor']):g}x {_esc(reference['name'])}, which measured "
              f"{float(reference['measured_ms']):.4g} ms beside them)" if reference else "")
    caption = (f"measured latency budget {float(selection['budget_ms']):.4g} ms{source} on {_esc(selection['backend'])}: "
               f"{within} of the {len(rows)} best archs by validation measured within it (batch 1, median of "
               f"interleaved samples); the best models are ranks {', '.join(map(str, selection['chosen_ranks']))}.")
    return f"<p class=caption>{caption}</p>" + _table(
        ("rank", "arch", "val top-1", "LUT ms", "measured ms", "p10-p90 ms", "within"),
        [(r["rank"], r["arch"], r["val_top1"], r["table_ms"], r["measured_ms"],
          f"{r['p10_ms']:.3f}-{r['p90_ms']:.3f}", "yes" if r["within_budget"] else "no") for r in rows])


def comparison(exp: Path, compare: Any, log: Log) -> str:
    if isinstance(compare, _Failed):  # its missing line was logged when compare.json was read
        return compare
    rows = compare["rows"]
    parts = [f"<p class=caption>latency measured on {_esc(compare.get('backend', '?'))}</p>"
             + _table(COMPARE_COLUMNS, [[r.get(c) for c in COMPARE_COLUMNS] for r in rows])]
    png = Experiment(exp).compare_png
    if png.is_file():
        data = png.read_bytes()
        parts.append(_png_tag(data, "test top-1 vs measured latency") if data.startswith(PNG_SIGNATURE)
                     else _note(log, f"comparison plot: {png} is not a PNG file"))
    return "".join(parts)


FIDELITY_COLUMNS = ("supernet", "sampler", "epochs", "Kendall tau [95%]", "tau in band", "tau of MACs",
                    "tau minus MACs' [95%, paired]", "top-3 overlap", "regret (points)", "inherited span",
                    "tau between calibration subsets (sd, points)")
TRUTH_COLUMNS = ("subnet", "table ms", "in band", "params", "stand-alone val top-1", "stand-alone test top-1")


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if isinstance(value, (int, float)) else "n/a"


def _supernet_label(checkpoint: str) -> str:
    """A checkpoint as a table shows it: `<experiment>/<supernet>/<epoch folder>` for a training's
    `<experiment>/checkpoints/<supernet>/epoch_N` (a bare epoch folder would not tell two supernets apart)."""
    parts = Path(checkpoint).parts
    if len(parts) >= 4 and parts[-3] == "checkpoints":
        return "/".join((parts[-4], parts[-2], parts[-1]))
    return checkpoint if len(checkpoint) <= 40 else Path(checkpoint).name


SCAN_COLUMNS = ("supernet", "sampler", "epochs", "largest − smallest [95%, paired]", "McNemar p",
                "random subnets' span")


def supernet_scan(path: Path) -> str:
    """`python -m autovit_ray.fidelity --scan`'s report: the spans per supernet and the inherited validation
    top-1 of every scanned subnet against its table latency (parameters without a table), one panel
    per supernet."""
    report = _read_json(path, "supernet scan")
    rows = []
    for name, r in report["supernets"].items():
        paired = r["span_paired"]
        rows.append([_supernet_label(name), r["sampler"], r["epochs_done"],
                     f"{r['largest_minus_smallest']:+.2f} [{paired['low']:+.2f}, {paired['high']:+.2f}]",
                     paired["mcnemar_p"], r["random_span"]])
    caption = (f"the largest, the smallest and {report['subnets']} random subnets (seed {report['seed']}), each "
               "with the validation top-1 it inherits, BatchNorm recalibrated; the difference is paired over the "
               "same validation images")
    fig, axes = _figure(len(report["supernets"]))
    for ax, (name, r) in zip(axes, report["supernets"].items()):
        table = all(row["lut_ms"] is not None for row in r["subnets"])
        x = [row["lut_ms"] if table else row["params"] / 1e6 for row in r["subnets"]]
        ax.scatter(x[2:], [row["val_top1"] for row in r["subnets"][2:]], s=14, label="random")
        for i, (role, marker) in enumerate((("largest", "^"), ("smallest", "v"))):
            ax.scatter([x[i]], [r["subnets"][i]["val_top1"]], marker=marker, s=50, label=role)
        ax.set_xlabel("latency table (ms)" if table else "parameters (M)")
        ax.set_ylabel("inherited validation top-1 (%)")
        ax.set_title(f"{_supernet_label(name)}: {r['sampler']}", fontsize=9)
        ax.legend(fontsize=7)
    return (f"<p class=caption>{_esc(caption)}</p>" + _table(SCAN_COLUMNS, rows)
            + _img(fig, "inherited validation top-1 vs latency"))


def rank_fidelity(path: Path) -> str:
    """`python -m autovit_ray.fidelity`'s report: the table per supernet and inherited vs stand-alone
    validation top-1, one panel per supernet."""
    report = _read_json(path, "rank fidelity report")
    truth = [s["val_top1"] for s in report["standalone"]["subnets"]]
    rows = []
    for name, r in report["supernets"].items():
        tau = f"{_signed(r['kendall_tau'])} [{_signed(r['tau_low'])}, {_signed(r['tau_high'])}]"
        # reports written before the paired difference was: n/a
        over_macs = r.get("tau_over_macs_ci") or [None, None]
        rows.append([_supernet_label(name), r["sampler"], r["epochs_done"], tau,
                     r["tau_in_band"], r["tau_macs"],
                     f"{_signed(r.get('tau_over_macs'))} [{_signed(over_macs[0])}, {_signed(over_macs[1])}]",
                     f"{r['top3_overlap']}/3", r["regret"], r["inherited_span"],
                     # scored on one calibration subset (--calib-draws 1): its noise unmeasured
                     f"{_signed(r['tau_between_draws'])} ({r['draw_sd']:.2f}) over {r['calib_draws']}"
                     if r.get("calib_draws") else "-"])
    sd = report["standalone"].get("seed_sd")
    # reports written before the ceiling was: computed here from the same record
    ceiling = {**truth_ceiling(report["standalone"]["subnets"], sd), **{
        k: v for k, v in report["standalone"].items() if k.startswith("tau_ceiling") and v is not None}}
    pairs = len(report["standalone"].get("repeats") or [])
    caption = (f"{len(truth)} subnets trained alone for {report['standalone']['epochs']} epochs; validation top-1"
               + (f"; the truth's own seed noise: sd {sd:.2f} points (from {pairs} seed pair"
                  f"{'' if pairs == 1 else 's'}{': a rough estimate' if pairs < 5 else ''})"
                  if isinstance(sd, (int, float)) else "")
               + (f", so a perfect predictor would reach tau {_signed(ceiling['tau_ceiling'])} against it (in band "
                  f"{_signed(ceiling['tau_ceiling_in_band'])}): about the ceiling of the taus below, an expected "
                  "value that one sample can pass" if ceiling["tau_ceiling"] is not None else ""))
    fig, axes = _figure(len(report["supernets"]))
    for ax, (name, r) in zip(axes, report["supernets"].items()):
        ax.scatter(r["inherited"], truth, s=18)
        ax.set_xlabel("inherited top-1 (%)")
        ax.set_ylabel("stand-alone top-1 (%)")
        ax.set_title(f"{_supernet_label(name)}: tau {_signed(r['kendall_tau'])}", fontsize=9)
    # the truth itself; test top-1 (reports of older versions have none) is never used to rank
    subnets = [[s.get("name", ""), s.get("lut_ms"), "yes" if s.get("in_band") else "no", s.get("params"),
                s["val_top1"], s.get("test_top1")] for s in report["standalone"]["subnets"]]
    return (f"<p class=caption>{_esc(caption)}</p>" + _table(FIDELITY_COLUMNS, rows)
            + _img(fig, "inherited vs stand-alone validation top-1")
            + "<p class=caption>The truth: each subnet trained alone; the ranking uses validation top-1, the test "
              "top-1 is reported only.</p>" + _table(TRUTH_COLUMNS, subnets))


__all__ = ["check_experiment", "write_report"]
