"""PNG figures of the population evaluation (matplotlib, Agg canvas; no display needed).

Figures are drawn on a ``matplotlib.figure.Figure`` with an explicit Agg canvas, so importing this module
never changes the global pyplot backend. Every figure states n, sigma, temperature and seed of each method
(legend labels from :meth:`SamplingSettings.label`) and the common values in its title.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from .metrics import SamplingSettings

__all__ = ["pca_2d", "plot_pass_at_k", "plot_embedding_map", "plot_frontier", "settings_summary"]

_DPI = 120


def pca_2d(x: np.ndarray | Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of ``x`` onto their first two principal components (numpy SVD).

    ``X_c = X - mean(X)``; ``X_c = U S V^T``; coordinates ``X_c V[:, :2]``; explained-variance ratio
    ``S_i^2 / sum_j S_j^2``. Each axis's sign is fixed so that its largest-magnitude loading is positive
    (deterministic output). If the data have fewer than two non-trivial directions the missing coordinates
    (and ratios) are 0.

    Returns:
        ``(coords, ratio)``: ``coords`` of shape ``(m, 2)``, ``ratio`` of shape ``(2,)``.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"pca_2d needs a non-empty 2-D array, got shape {a.shape}")
    xc = a - a.mean(axis=0, keepdims=True)
    coords = np.zeros((a.shape[0], 2))
    ratio = np.zeros(2)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    total = float(np.sum(s ** 2))
    if total == 0.0:
        return coords, ratio
    r = min(2, vt.shape[0])
    for i in range(r):
        v = vt[i]
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        coords[:, i] = xc @ v
        ratio[i] = s[i] ** 2 / total
    return coords, ratio


def _common(settings: Sequence[SamplingSettings], field: str) -> object | None:
    vals = {getattr(s, field) for s in settings}
    return vals.pop() if len(vals) == 1 else None


def settings_summary(settings: Sequence[SamplingSettings]) -> str:
    """``"n=16, seed=0"``-style summary of the settings shared by all methods (per-method ones say 'per method')."""
    parts = []
    for field, sym in (("n", "n"), ("sigma", "σ"), ("temperature", "T"), ("seed", "seed")):
        v = _common(settings, field)
        parts.append(f"{sym}={v:g}" if isinstance(v, float) else
                     f"{sym}={v}" if v is not None else f"{sym} per method")
    return ", ".join(parts)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def plot_pass_at_k(curves: Mapping[SamplingSettings, Mapping[int, float]], path: str | Path, *,
                   num_problems: int | None = None, title: str = "Pass@K") -> Path:
    """Pass@K curves, one line per method, K on a log2 x-axis; writes a PNG and returns its path.

    Args:
        curves: ``{settings: {K: pass@K}}`` (e.g. from :func:`.metrics.pass_at_k_curve`).
        path: output ``.png``.
        num_problems: stated in the title when given.
        title: title prefix; the shared n / σ / T / seed are appended.
    """
    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    all_k: set[int] = set()
    for settings, curve in curves.items():
        ks = sorted(int(k) for k in curve)
        if not ks:
            continue
        all_k.update(ks)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=settings.label())
    if not all_k:
        raise ValueError("every curve is empty")
    ax.set_xscale("log", base=2)
    ticks = sorted(all_k)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(k) for k in ticks])
    ax.set_xlabel("K (samples per problem, log2 scale)")
    ax.set_ylabel("pass@K (unbiased estimator)")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    probs = f", {num_problems} problems" if num_problems is not None else ""
    ax.set_title(f"{title}: {settings_summary(list(curves))}{probs}", fontsize=10)
    return _save(fig, path)


def plot_embedding_map(embeddings: Mapping[SamplingSettings, np.ndarray], path: str | Path, *,
                       title: str = "Response embeddings (all-MiniLM-L6-v2), PCA") -> Path:
    """2-D PCA map of response embeddings coloured by method; writes a PNG and returns its path.

    All methods' rows are projected with one joint PCA (:func:`pca_2d`), so positions are comparable.

    Args:
        embeddings: ``{settings: (m_method, d) array}``; every array must have the same ``d``.
        path: output ``.png``.
        title: title prefix; the shared n / σ / T / seed and the number of responses are appended.
    """
    items = [(s, np.asarray(e, dtype=np.float64)) for s, e in embeddings.items()]
    items = [(s, e) for s, e in items if e.size]
    if not items:
        raise ValueError("no embeddings to plot")
    dims = {e.shape[1] if e.ndim == 2 else -1 for _, e in items}
    if len(dims) != 1 or -1 in dims:
        raise ValueError(f"embeddings must be 2-D with one common width, got widths {sorted(dims)}")
    stacked = np.concatenate([e for _, e in items], axis=0)
    coords, ratio = pca_2d(stacked)
    fig = Figure(figsize=(7.0, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    pos = 0
    for s, e in items:
        c = coords[pos:pos + e.shape[0]]
        pos += e.shape[0]
        ax.scatter(c[:, 0], c[:, 1], s=14, alpha=0.7, label=f"{s.label()} [{e.shape[0]} responses]")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% of variance)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{title}: {settings_summary([s for s, _ in items])}, {stacked.shape[0]} responses",
                 fontsize=10)
    return _save(fig, path)


def plot_frontier(points: Sequence, evaluations: Sequence, n: int, path: str | Path, *, title: str = "") -> Path:
    """The sweep's diversity-vs-quality frontier (`btrans_verl.eval.sweep`): accuracy, pass@n and the mean mind's
    log-prob per token against distinct answers per problem, one line per curve, each point with its 95%
    interval. A latent curve starts from the no-latent point at its temperature (its sigma = 0)."""
    panels = (("accuracy", "accuracy (pass@1)"), (f"pass@{n}", f"pass@{n}"),
              ("mean_mind_logprob", "mean-mind log-prob / token"))
    fig = Figure(figsize=(5.2 * len(panels), 4.6))
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    curves: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        curves.setdefault(p.curve, []).append(i)
    origin = {p.temperature: i for i, p in enumerate(points) if not p.latent}
    for curve, members in curves.items():
        first = points[members[0]]
        if first.latent and first.temperature in origin:
            members = [origin[first.temperature], *members]
        for ax, (metric, _) in zip(axes, panels):
            xs, ys, lo, hi = [], [], [], []
            for i in members:
                ev = evaluations[i]
                if metric not in ev.per_problem:
                    continue
                xs.append(float(np.mean(ev.per_problem["distinct_answers"])))
                ys.append(float(np.mean(ev.per_problem[metric])))
                a, b = ev.intervals[metric]
                lo.append(ys[-1] - a)
                hi.append(b - ys[-1])
            style = "--" if first.granularity == "token" else "-"
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, capsize=2, ms=4, lw=1.4, label=curve)
            for i, x, y in zip(members, xs, ys):
                p = points[i]
                tag = f"T={p.temperature:g}" if not p.latent else f"σ={p.sigma:g}"
                ax.annotate(tag, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, alpha=0.7)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xlabel(f"distinct answers per problem (of n={n})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "diversity vs quality", fontsize=10)
    return _save(fig, path)
