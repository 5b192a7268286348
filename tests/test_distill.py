"""KD losses against hand-computed values, and offline teacher loading (autovit_ray.distill)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from autovit_ray.distill import (
    KDConfig,
    Teacher,
    build_teacher,
    cross_entropy,
    hard_kd_loss,
    kd_loss,
    load_teacher,
    save_teacher_checkpoint,
    soft_kd_loss,
)

S = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])  # student logits
T = np.array([[1.0, 3.0, 0.0], [0.5, -0.5, 2.0]])  # teacher logits (argmax 1 and 2)
Y = np.array([0, 2])


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(z)[np.arange(len(y)), y].mean())


def t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def test_soft_kd_matches_hand_computed() -> None:
    alpha, tau = 0.3, 2.0
    log_ps, log_pt = log_softmax(S / tau), log_softmax(T / tau)
    kl = float((np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean())  # KL(teacher || student)
    expected = (1 - alpha) * ce(S, Y) + alpha * tau**2 * kl
    got = soft_kd_loss(t(S), t(T), torch.tensor(Y), alpha=alpha, tau=tau)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert kd_loss("soft", t(S), torch.tensor(Y), t(T), alpha, tau).item() == pytest.approx(expected)


def test_hard_kd_matches_hand_computed() -> None:
    alpha = 0.4
    expected = (1 - alpha) * ce(S, Y) + alpha * ce(S, np.array([1, 2]))
    got = hard_kd_loss(t(S), t(T), torch.tensor(Y), alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert kd_loss("hard", t(S), torch.tensor(Y), t(T), alpha).item() == pytest.approx(expected)


def test_ce_term_with_soft_targets_and_label_smoothing() -> None:
    soft = np.array([[0.7, 0.2, 0.1], [0.0, 0.4, 0.6]])  # e.g. Mixup targets
    expected = float(-(soft * log_softmax(S)).sum(axis=1).mean())
    assert cross_entropy(t(S), t(soft), label_smoothing=0.1).item() == pytest.approx(expected)  # used as given
    eps = 0.1
    smooth = np.full((2, 3), eps / 3) + (1 - eps) * np.eye(3)[Y]
    expected_ls = float(-(smooth * log_softmax(S)).sum(axis=1).mean())
    assert cross_entropy(t(S), torch.tensor(Y), eps).item() == pytest.approx(expected_ls)
    # hard KD with soft targets: the label term takes the soft targets, the teacher term argmax Z_t
    alpha = 0.5
    expected_kd = (1 - alpha) * expected + alpha * ce(S, np.array([1, 2]))
    assert hard_kd_loss(t(S), t(T), t(soft), alpha).item() == pytest.approx(expected_kd)
    assert kd_loss("none", t(S), torch.tensor(Y)).item() == pytest.approx(ce(S, Y))
    assert soft_kd_loss(t(S), t(T), torch.tensor(Y), alpha=0.0).item() == pytest.approx(ce(S, Y))


def test_teacher_logits_get_no_gradient_and_bad_arguments() -> None:
    s, te = t(S).requires_grad_(), t(T).requires_grad_()
    (soft_kd_loss(s, te, torch.tensor(Y), 0.5, 2.0) + hard_kd_loss(s, te, torch.tensor(Y))).backward()
    assert s.grad is not None and te.grad is None
    with pytest.raises(ValueError, match="alpha"):
        soft_kd_loss(t(S), t(T), torch.tensor(Y), alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        soft_kd_loss(t(S), t(T), torch.tensor(Y), tau=0.0)
    with pytest.raises(ValueError, match="unknown KD kind"):
        kd_loss("feature", t(S), torch.tensor(Y), t(T))
    with pytest.raises(ValueError, match="needs teacher_logits"):
        kd_loss("hard", t(S), torch.tensor(Y))


# --- teachers --------------------------------------------------------------------------------------


def test_timm_teacher_needs_offline_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing is downloaded.*test_resnet\\?random=1"):
        load_teacher("timm:test_resnet", num_classes=10)
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher("timm:test_resnet", num_classes=10, weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown timm model"):
        load_teacher("timm:no_such_net?random=1", num_classes=10)
    for spec in ("resnet18", "hub:resnet18", "timm:", "timm:test_resnet?pretrained=1"):
        with pytest.raises(ValueError, match="teacher spec"):
            load_teacher(spec, num_classes=10)


def test_timm_teacher_random_and_local_weights(tmp_path: Path) -> None:
    teacher = load_teacher("timm:test_resnet?random=1", num_classes=10)
    assert teacher.mean == (0.5, 0.5, 0.5)  # from timm's pretrained_cfg for this model
    teacher.train()
    assert not any(m.training for m in teacher.modules())  # always eval
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 16, 16)
    out = teacher(x)
    assert out.shape == (2, 10) and not out.requires_grad

    torch.save(teacher.model.state_dict(), tmp_path / "w.pth")
    again = load_teacher("timm:test_resnet", num_classes=10, weights=tmp_path / "w.pth")
    assert torch.allclose(again(x), out)
    with pytest.raises(ValueError, match="cannot load weights"):
        load_teacher("timm:test_resnet", num_classes=5, weights=tmp_path / "w.pth")


def test_checkpoint_teacher(tmp_path: Path) -> None:
    model = timm.create_model("test_resnet", num_classes=4)
    path = tmp_path / "teacher.pt"
    save_teacher_checkpoint(path, model, "test_resnet", 4, mean=(0.1, 0.2, 0.3), std=(0.9, 0.8, 0.7))
    teacher = load_teacher(f"checkpoint:{path}", num_classes=4)
    assert teacher.mean == pytest.approx((0.1, 0.2, 0.3)) and teacher.std == pytest.approx((0.9, 0.8, 0.7))
    x = torch.randn(2, 3, 16, 16)
    expected = model.eval()(teacher_input(x, teacher))
    assert torch.allclose(teacher(x), expected, atol=1e-5)

    with pytest.raises(ValueError, match="has 4 classes"):
        load_teacher(f"checkpoint:{path}", num_classes=10)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a teacher checkpoint"):
        load_teacher(f"checkpoint:{tmp_path / 'junk.pt'}", num_classes=4)
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a teacher checkpoint"):
        load_teacher(f"checkpoint:{tmp_path / 'other.pt'}", num_classes=4)
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher(f"checkpoint:{tmp_path / 'none.pt'}", num_classes=4)
    save_teacher_checkpoint(tmp_path / "gray.pt", model, "test_resnet", 4, mean=(0.5,), std=(0.25,))
    with pytest.raises(ValueError, match="the teacher mean = \\(0.5,\\) is invalid: expected 3 finite"):
        load_teacher(f"checkpoint:{tmp_path / 'gray.pt'}", num_classes=4)
    with pytest.raises(ValueError, match="the student input std = .* is invalid: .*, all positive"):
        load_teacher(f"checkpoint:{path}", num_classes=4, input_std=(0.2, 0.0, 0.2))


def teacher_input(x: torch.Tensor, teacher: Teacher) -> torch.Tensor:
    """What the teacher's model must see: the student batch un-normalised, re-normalised by hand."""
    raw = x * torch.tensor(teacher.input_std).view(1, 3, 1, 1) + torch.tensor(teacher.input_mean).view(1, 3, 1, 1)
    return (raw - torch.tensor(teacher.mean).view(1, 3, 1, 1)) / torch.tensor(teacher.std).view(1, 3, 1, 1)


def test_teacher_renormalises_and_resizes() -> None:
    teacher = Teacher(nn.Identity(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                      input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0), resolution=4)
    x = torch.full((1, 3, 8, 8), 0.75)  # raw pixel value 0.75 under mean 0 / std 1
    out = teacher(x)
    assert out.shape == (1, 3, 4, 4) and torch.allclose(out, torch.full_like(out, 0.5))


def test_kd_config() -> None:
    assert build_teacher(KDConfig(), num_classes=10) is None
    assert build_teacher(KDConfig(kind="soft", inplace=True), num_classes=10) is None
    cfg = KDConfig.from_dict({"kind": "hard", "teacher": "timm:test_resnet?random=1", "teacher_resolution": 16})
    teacher = build_teacher(cfg, num_classes=3, input_mean=(0, 0, 0), input_std=(1, 1, 1))
    assert isinstance(teacher, Teacher) and teacher(torch.randn(1, 3, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match="needs a teacher"):
        KDConfig(kind="hard")
    with pytest.raises(ValueError, match="kind"):
        KDConfig(kind="feature")
    with pytest.raises(ValueError, match="alpha"):
        KDConfig(kind="none", alpha=-0.1)
    with pytest.raises(ValueError, match="teacher spec"):
        KDConfig(kind="soft", teacher="regnety_320")
    with pytest.raises(ValueError, match="unknown KDConfig field"):
        KDConfig.from_dict({"temperature": 2.0})
    with pytest.raises(ValueError, match=r"KDConfig.teacher_std = \(0.2, 0.2\) is invalid"):
        KDConfig.from_dict({"kind": "hard", "teacher": "timm:test_resnet?random=1", "teacher_std": [0.2, 0.2]})
    with pytest.raises(ValueError, match="KDConfig.teacher_mean .* is invalid"):
        KDConfig(kind="hard", teacher="timm:test_resnet?random=1", teacher_mean=("a", 0.1, 0.2))
