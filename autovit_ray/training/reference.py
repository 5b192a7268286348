"""Training a hand-designed reference model (a timm model such as `mobilevit_xxs`) with the supernets' recipe.

A searched model is only worth something next to a reference trained alike, so the reference gets the
supernet training's data splits, augmentation, loss (label smoothing, Mixup/CutMix, the external
teacher if any), AdamW settings, cosine schedule, gradient clipping, epochs, steps per epoch and seeds.
It trains at the searched models' input resolution with the input profile's strides (the searched
models' small-input adaptation: `build_reference`), as `compare` measures it.

The run is resumable: `<out_dir>/state.pt` after every epoch (atomic), and
`<out_dir>/history.json` (one record per epoch: train loss, images/s, validation top-1). The final
weights are `<out_dir>/model.pt` (a plain state dict). Pure PyTorch + timm: no Ray, no MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from autovit_ray.config import flatten
from autovit_ray.data import Loaders, build_loaders, resolve_data_path
from autovit_ray.distill import build_teacher, kd_loss
from autovit_ray.evaluation import evaluate
from autovit_ray.io import atomic_path, atomic_write_text
from autovit_ray.progress import Eta
from autovit_ray.training.config import TrainConfig
from autovit_ray.training.loop import derive_seed, seed_everything
from autovit_ray.training.optim import build_optimizer, build_scheduler

# Named small-input adaptations of a timm MobileViT, as its strides [stem, stages[0], ..., stages[4]]
# (timm's own: (2, 1, 2, 2, 2, 2)). Both leave 8x8, 4x4 and 2x2 maps to the MobileViT blocks at 32 px;
# 'stage2' keeps the stem's downsampling and so runs its first blocks on a quarter of the pixels.
MOBILEVIT_ADAPTATIONS: dict[str, tuple[int, ...]] = {
    "stem1": (1, 1, 2, 2, 2, 2),  # stem stride 1 (the `cifar10` input profile's adaptation)
    "stage2": (2, 1, 1, 2, 2, 2),  # the second stage's stride 1
}


@dataclass(frozen=True)
class ReferenceSpec:
    """Which reference, and how it is adapted to the input profile."""

    model: str  # a timm model name
    resolution: int  # the searched models' input resolution
    strides: tuple[int, ...] | None = None  # the input profile's 8 strides; None: timm's own
    adaptation: str | None = None  # a name of MOBILEVIT_ADAPTATIONS, in place of `strides`
    min_tokens: int = 1  # attention tokens per sequence at least this (smaller patches where needed)

    def __post_init__(self) -> None:
        if self.adaptation is not None and self.adaptation not in MOBILEVIT_ADAPTATIONS:
            raise ValueError(f"unknown reference adaptation {self.adaptation!r}: expected one of "
                             f"{sorted(MOBILEVIT_ADAPTATIONS)}")
        if self.adaptation is not None and self.strides is not None:
            raise ValueError("a reference takes either the input profile's strides or a named adaptation, not both")
        if self.min_tokens < 1:
            raise ValueError(f"min_tokens {self.min_tokens}: expected an integer >= 1")


def mobilevit_strides(input_strides: Sequence[int]) -> tuple[int, ...]:
    """An AutoViT input profile's strides [stem, mb1, mb2, mb3, t1, t2, t3, t4] as timm MobileViT's
    [stem, stages[0], ..., stages[4]]: MobileViT's stages 2-4 open with a stride-2 MV2 block before
    their MobileViT block, so stages[2] is mb3 + t1, stages[3] is t2 and stages[4] is t3 (+ t4, a
    stage MobileViT does not have). The imagenet input profile maps to MobileViT's own (2, 1, 2, 2, 2, 2)."""
    s = tuple(int(x) for x in input_strides)
    if len(s) != 8:
        raise ValueError(f"input profile strides {s}: expected 8 (stem, 3 MV2 stages, 4 transformer stages)")
    return s[0], s[1], s[2], s[3] * s[4], s[5], s[6] * s[7]


def _downsampling_convs(model: nn.Module) -> list[nn.Conv2d] | None:
    """timm MobileViT's stride positions: the stem conv and each stage's first 3x3 conv; None when
    `model` is not shaped so (another family: only its stem can be adapted)."""
    stem, stages = getattr(getattr(model, "stem", None), "conv", None), getattr(model, "stages", None)
    if not isinstance(stem, nn.Conv2d) or stages is None or len(stages) != 5:
        return None
    convs = [getattr(getattr(stage[0], "conv2_kxk", None), "conv", None) for stage in stages]
    conv2ds = [c for c in convs if isinstance(c, nn.Conv2d)]
    return [stem, *conv2ds] if len(conv2ds) == len(convs) else None


def build_reference(name: str, num_classes: int, strides: Sequence[int] | None) -> tuple[nn.Module, str]:
    """A timm model by name with fresh weights, adapted to the input profile's `strides` (the
    searched models' small-input adaptation): every stride of a timm MobileViT, only the stem's of
    another model with a conv stem. Returns (model, note)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r} as a reference: expected a name of timm.list_models()")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    if strides is None:
        return model, ""
    convs = _downsampling_convs(model)
    if convs is not None:
        wanted = mobilevit_strides(strides)
        own = tuple(c.stride[0] for c in convs)
        if any(w > o for w, o in zip(wanted, own)):
            return model, f"timm strides {own}: the input profile's {wanted} would downsample more than MobileViT"
        for conv, stride in zip(convs, wanted):
            conv.stride = (stride, stride)
        return model, "" if wanted == own else f"strides {wanted} (the input profile's small-input adaptation)"
    stem = getattr(getattr(model, "stem", None), "conv", None)
    if stem is not None and isinstance(getattr(stem, "stride", None), tuple):
        if stem.stride[0] != strides[0]:
            stem.stride = (strides[0], strides[0])
            return model, f"stem stride {strides[0]} (the input profile's small-input adaptation)"
        return model, ""
    return model, "timm default strides: the input profile's small-input adaptation not applied (no stem.conv)"


class _PatchBlock(Protocol):
    """What this file uses of a timm MobileViT block (`MobileVitBlock`, `MobileVitV2Block`)."""

    patch_size: tuple[int, int]
    patch_area: int

    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle: ...


def _mobilevit_blocks(model: nn.Module) -> list[_PatchBlock]:
    """timm MobileViT's attention blocks (the modules with `patch_size` and a `transformer`), in order."""
    return [cast(_PatchBlock, m) for m in model.modules()
            if hasattr(m, "patch_size") and hasattr(m, "transformer")]


def _block_maps(model: nn.Module, resolution: int) -> list[tuple[int, int]]:
    """(H, W) of the feature map entering each MobileViT block at `resolution`, by one forward pass."""
    maps: list[tuple[int, int]] = []
    hooks = [b.register_forward_pre_hook(lambda _, args: maps.append(tuple(args[0].shape[-2:])))
             for b in _mobilevit_blocks(model)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, resolution, resolution))
    finally:
        for hook in hooks:
            hook.remove()
    return maps


def attention_tokens(model: nn.Module, resolution: int) -> list[int]:
    """Tokens per attention sequence of each MobileViT block at `resolution`: the patches per map
    (MobileViT runs one sequence per pixel position inside a patch; timm interpolates a map up to a
    multiple of the patch)."""
    tokens = []
    for block, (h, w) in zip(_mobilevit_blocks(model), _block_maps(model, resolution)):
        ph, pw = block.patch_size
        tokens.append(-(-h // ph) * -(-w // pw))
    return tokens


def fit_patch_sizes(model: nn.Module, resolution: int, min_tokens: int) -> list[int]:
    """Lower each MobileViT block's patch size (in place) to the largest that divides its map and
    leaves at least `min_tokens` tokens per sequence (1 when none does); returns the patch sizes. No
    parameter depends on the patch size, so only the attention's grouping changes."""
    sizes = []
    for block, (h, w) in zip(_mobilevit_blocks(model), _block_maps(model, resolution)):
        p = block.patch_size[0]
        while p > 1 and (h % p or w % p or (h // p) * (w // p) < min_tokens):
            p -= 1
        block.patch_size, block.patch_area = (p, p), p * p
        sizes.append(p)
    return sizes


def build_spec(spec: ReferenceSpec, num_classes: int) -> tuple[nn.Module, str]:
    """`build_reference` for a spec: its strides or named adaptation, then its patch-size fix."""
    if spec.adaptation is None:
        model, note = build_reference(spec.model, num_classes, spec.strides)
    else:
        model, note = build_reference(spec.model, num_classes, None)
        convs = _downsampling_convs(model)
        if convs is None:
            raise ValueError(f"{spec.model!r} is not a timm MobileViT: adaptation {spec.adaptation!r} needs one")
        for conv, stride in zip(convs, MOBILEVIT_ADAPTATIONS[spec.adaptation]):
            conv.stride = (stride, stride)
        note = f"adaptation {spec.adaptation}: strides {MOBILEVIT_ADAPTATIONS[spec.adaptation]}"
    if spec.min_tokens > 1:
        sizes = fit_patch_sizes(model, spec.resolution, spec.min_tokens)
        note += f"; patch sizes {sizes} (>= {spec.min_tokens} tokens per sequence)"
    return model, note.lstrip("; ")


def _fingerprint(cfg: TrainConfig, spec: ReferenceSpec, data_path: str | None = None) -> dict[str, Any]:
    """What the run's result depends on: the training config (less where it is written) and the spec."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "output_dir", "supernets", "mlflow", "ray")}
    return json.loads(json.dumps({"spec": dataclasses.asdict(spec), "config": config,
                                  "data_path": data_path or resolve_data_path(cfg.data)}, default=str))


def same_settings(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a saved run's fingerprint is the current one. A setting the saved one lacks was added
    to the code since: it matches while the current value is that setting's default (the behaviour
    the run was trained with), as `train` treats a resumed experiment's config."""
    old, new = flatten(saved), flatten(current)
    defaults = flatten(_fingerprint(TrainConfig(), ReferenceSpec("", 0), data_path="-"))
    return set(old) <= set(new) and all(old[k] == new[k] for k in old) and all(
        k in defaults and new[k] == defaults[k] for k in set(new) - set(old))


def _load_state(path: Path, fingerprint: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any] | None:
    """The saved state when it is readable and was trained with these settings, else None (logged)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: train again rather than use it
        log(f"{path} is unreadable ({type(e).__name__}); training the reference again from scratch")
        return None
    if not isinstance(state.get("fingerprint"), dict) or not same_settings(state["fingerprint"], fingerprint):
        log(f"{path} was trained with other settings; training the reference again from scratch")
        return None
    return state


def train_epoch(model: nn.Module, loaders: Loaders, cfg: TrainConfig, epoch: int, steps: int, optimizer: Any,
                scheduler: Any, teacher: nn.Module | None = None) -> dict[str, Any]:
    """Epoch `epoch` (1-based) of one plain network, `steps` steps, with the supernets' recipe: the same
    per-epoch seed as rank 0 of the supernet training, mixup, label smoothing, KD from `teacher` when
    given, gradient clipping and the per-step schedule. Returns {epoch, train_loss, train_images_per_s}."""
    seed_everything(derive_seed(cfg.seed, epoch, 0))
    loaders.set_epoch(epoch)
    model.train()
    start, images, loss_sum = time.perf_counter(), 0, 0.0
    for step, (x, y) in enumerate(loaders.train):
        if step >= steps:
            break
        if loaders.mixup_fn is not None:
            x, y = loaders.mixup_fn(x, y)
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
        smoothing = loaders.label_smoothing if y.dtype == torch.long else 0.0  # mixed targets carry their own
        kind = cfg.kd.kind if teacher is not None else "none"  # in-place distillation needs a supernet
        loss = kd_loss(kind, model(x), y, teacher_logits, cfg.kd.alpha, cfg.kd.tau, smoothing)
        loss.backward()
        if cfg.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_update((epoch - 1) * steps + step + 1)  # the schedule is a function of the step
        images += len(x)
        loss_sum += float(loss.detach())
    return {"epoch": epoch, "train_loss": loss_sum / max(steps, 1),
            "train_images_per_s": images / (time.perf_counter() - start)}


def train_reference(cfg: TrainConfig, spec: ReferenceSpec, out_dir: str | Path,
                    log: Callable[[str], None] = print) -> Path:
    """Train `spec` with `cfg`'s recipe to `cfg.train.epochs`, resuming from `out_dir/state.pt`;
    returns the path of the final weights (`out_dir/model.pt`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, weights_path = out_dir / "state.pt", out_dir / "model.pt"
    fingerprint = _fingerprint(cfg, spec)
    seed_everything(cfg.seed)
    loaders = build_loaders(cfg.data, resolution=spec.resolution)
    model, _ = build_spec(spec, loaders.num_classes)
    device = torch.device("cpu")
    teacher = build_teacher(cfg.kd, loaders.num_classes, loaders.mean, loaders.std, device)
    optimizer = build_optimizer(model, dataclasses.replace(cfg.optimizer, freeze_inactive=False))
    limit = cfg.train.max_steps_per_epoch
    steps = min(len(loaders.train), limit) if limit else len(loaders.train)
    scheduler = build_scheduler(optimizer, cfg.train.epochs, steps, cfg.schedule)
    epoch, history = 0, []
    state = _load_state(state_path, fingerprint, log)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, history = int(state["epoch"]), list(state["history"])
    if epoch >= cfg.train.epochs and weights_path.is_file():
        return weights_path
    scheduler.step_update(epoch * steps)  # the schedule is a function of the step: resume it there
    eta = Eta(total=cfg.train.epochs, done=epoch, unit="epoch")
    while epoch < cfg.train.epochs:
        epoch += 1
        record = train_epoch(model, loaders, cfg, epoch, steps, optimizer, scheduler, teacher)
        if epoch % cfg.eval.every_n_epochs == 0 or epoch == cfg.train.epochs:
            record["val_top1"] = evaluate(model, loaders.val, resolution=spec.resolution, device=device,
                                          max_batches=cfg.eval.max_batches).top1
        history.append(record)
        with atomic_path(state_path) as tmp:
            torch.save({"epoch": epoch, "history": history, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "fingerprint": fingerprint}, tmp)
        atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
        log(f"[{spec.model}] epoch {epoch}/{cfg.train.epochs}: " +
            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch") + f" ({eta.phrase(epoch)})")
    with atomic_path(weights_path) as tmp:
        torch.save(model.state_dict(), tmp)
    return weights_path


__all__ = ["MOBILEVIT_ADAPTATIONS", "ReferenceSpec", "attention_tokens", "build_reference", "build_spec",
           "fit_patch_sizes", "mobilevit_strides", "train_epoch", "train_reference"]
