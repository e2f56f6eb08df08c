"""The ceiling of retrieval on the generator's interactions: rank every item for a user by the
generator's own expected count of labelled positives, E[1{row picks item} * P(label 1)], estimated
by simulating rows of that user with the generator's rules (features/synth.InteractionGenerator:
popularity-sampled candidates, the best under user affinity 85% of the time, the label's
probability averaged over devices). No model trained on the rows can rank better in
expectation, so its recall@K bounds what a two-tower model or ALS can reach on the split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from plexrec.features import synth


def expected_positives(gen: synth.InteractionGenerator, users: np.ndarray, samples: int,
                       seed: int = 0, chunk: int = 16) -> np.ndarray:
    """[len(users), gen.items]: each user's simulated expected positives per item (generator
    indices, 0-based), from `samples` simulated rows per user."""
    rng = np.random.default_rng(seed)
    n_cand = synth._CANDIDATES
    device_p = np.diff(np.concatenate([[0.0], synth._DEVICE_P])) / synth._DEVICE_P[-1]
    price = np.log(gen.item_price) - gen.price_mu
    base = gen.bias + gen.item_quality
    out = np.zeros((len(users), gen.items))
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        affinity = gen.user_vec[block] @ gen.item_vec.T  # [b, items]
        young = (gen.user_age[block] < 30).astype(float)
        logit = (base[None, :] + 3.0 * affinity
                 - 0.6 * young[:, None] * price[None, :])  # before the device term
        label_p = sum(p * synth._sigmoid(logit + gen.device_cat[d, gen.item_category][None, :])
                      for d, p in enumerate(device_p))
        b = len(block)
        cand = gen.item_of_rank[gen.item_sampler.ranks(rng.random((b, samples, n_cand))) - 1]
        gumbel = -np.log(-np.log1p(-rng.random((b, samples, n_cand)) * (1 - 1e-12)))
        scores = synth._AFFINITY_SHARPNESS * np.take_along_axis(
            affinity[:, None, :], cand, axis=2) + gumbel
        best = np.take_along_axis(cand, scores.argmax(axis=2)[..., None], axis=2)[..., 0]
        pick = np.where(rng.random((b, samples)) < synth._AFFINITY_SHARE, best, cand[..., 0])
        weights = np.take_along_axis(label_p, pick, axis=1)
        for i in range(b):
            out[start + i] = np.bincount(pick[i], weights=weights[i], minlength=gen.items)
    return out / samples


def oracle_scorer(gen: synth.InteractionGenerator, user_raw: np.ndarray, user_cache: np.ndarray,
                  item_raw: np.ndarray, samples: int) -> Callable[[np.ndarray], torch.Tensor]:
    """A scorer for training.retrieval_metrics.evaluate_topk: cache user ids -> the oracle's
    scores of the candidate items (raw ids are generator index + 1)."""
    table = expected_positives(gen, user_raw - 1, samples)
    row_of = {int(u): r for r, u in enumerate(user_cache)}
    columns = item_raw - 1

    def score(batch: np.ndarray) -> torch.Tensor:
        rows = np.array([row_of[int(u)] for u in batch])
        return torch.from_numpy(table[rows][:, columns].astype(np.float32))

    return score
