"""Metrics (through `evaluate`, from the local metric folders), temperature scaling and calibration error."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emotion.labels import LABELS
from emotion.info import ModelInfo
from emotion.torch_backend import face_logits

from .data import FaceDataset, FaceSplit

METRICS_DIR = Path(__file__).parent / "metrics"


@lru_cache(maxsize=None)
def _metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, split: FaceSplit, info: ModelInfo, batch_size: int = 256,
                   tta_flip: bool | None = None, device: str = "cpu") -> np.ndarray:
    """Logits (N, 8) for pre-cropped faces, through serving's preprocessing and `face_logits` (flip, bias), plus the
    model's blendshape head where it has one, read on each row's image as serving reads a crop."""
    loader = torch.utils.data.DataLoader(FaceDataset(split, info), batch_size=batch_size)
    model.eval()
    out = [face_logits(model, x.to(device), info, tta_flip) for x, *_ in loader]
    if not out:
        return np.zeros((0, len(LABELS)), np.float32)
    logits, head = torch.cat(out).numpy(), info.head()
    if head is not None:
        logits = head.apply(logits, split.images, info.labels, _landmarks().read, info.logit_bias)
    return logits


@lru_cache(maxsize=1)
def _landmarks():
    """One landmarker for every evaluation in this process (loads on the first model with a blendshape head)."""
    from emotion.action_units import ActionUnitReader

    return ActionUnitReader()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising validation NLL of softmax(logits / T) (Guo et al., 2017)."""
    z, y = torch.from_numpy(logits).double(), torch.from_numpy(labels).long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def class_margin(logits: np.ndarray, index: int) -> np.ndarray:
    """Class `index`'s logit minus the largest other logit: > 0 where the face is called that class."""
    return logits[:, index] - np.delete(logits, index, axis=1).max(1)


def recall_at_false_rate(positive: np.ndarray, negative: np.ndarray, rates=(0.005, 0.01, 0.02)) -> dict[float, float]:
    """For each rate r: the share of `positive` scores above the threshold that lets at most r of the `negative`
    scores through (floor(r * n) of them). A threshold-free view of how well one class is told from the rest: the
    recall a bias could buy at that cost, whatever bias was chosen."""
    neg = np.sort(np.asarray(negative, np.float64))[::-1]
    if not len(neg) or not len(positive):
        raise ValueError("recall at a false rate needs positive and negative scores")
    out = {}
    for r in rates:
        threshold = neg[min(int(np.floor(r * len(neg))), len(neg) - 1)]
        out[r] = float((np.asarray(positive) > threshold).mean())
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: the mean |accuracy - confidence| weighted by bin size."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == labels).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits).double() / temperature, dim=1).numpy()


def compute_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1, confusion matrix, NLL and ECE before/after scaling."""
    report = _metric("classification").compute(predictions=logits.argmax(1).tolist(), references=labels.tolist(),
                                               labels=list(range(len(LABELS))))
    p1, pt = softmax(logits), softmax(logits, temperature)
    nll = lambda p: float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())  # noqa: E731
    return {
        "n": len(labels), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
        "per_class": {lab: {"precision": report["precision"][i], "recall": report["recall"][i],
                            "f1": report["f1"][i], "support": int(report["support"][i])} for i, lab in enumerate(LABELS)},
        "confusion_matrix": report["confusion_matrix"],
        "nll_before": nll(p1), "nll_after": nll(pt),
        "ece_before": expected_calibration_error(p1, labels), "ece_after": expected_calibration_error(pt, labels),
    }


def quick_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and macro-F1 only (the per-epoch check and every post-hoc candidate), from one confusion count.

    The same numbers as the `classification` metric's (scikit-learn's, zero_division=0, over all 8 classes; a test
    holds them equal) without its round trip through `evaluate`'s Arrow writer, which cost ~17 ms a call: the joint
    bias fit scores 26 x 41 pairs on every report, minutes per weight-average candidate. The final reports
    (`compute_metrics`) still go through `evaluate`."""
    n = len(LABELS)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        raise ValueError("a report with no faces has no accuracy: check the split or view it scores")
    cm = np.bincount(labels * n + logits.argmax(1), minlength=n * n).reshape(n, n)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)  # (TP + FP) + (TP + FN) = 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros(n), where=denom > 0)
    return {"accuracy": float(tp.sum() / len(labels)), "macro_f1": float(f1.mean())}


def view_reports(logits: dict[str, np.ndarray], vals: dict[str, FaceSplit]) -> dict[str, dict]:
    """Accuracy and macro-F1 per validation report: each source's split, and each of its views (`<name>_<view>`)."""
    reports = {}
    for name, split in vals.items():
        reports[name] = quick_metrics(logits[name], split.labels)
        for view, keep in split.views.items():
            reports[f"{name}_{view}"] = quick_metrics(logits[name][keep], split.labels[keep])
    return reports


def save_confusion_png(cm: list[list[int]], path: Path, title: str) -> None:
    """The confusion matrix as a row-normalised heat map with counts, for the model card."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
