"""The two-tower retrieval model: user and item towers over the same TorchRec embedding layouts as
the ranking models, scored by a dot product of L2-normalised vectors.

Each tower = its layout module's per-feature outputs, concatenated with the tower's dense
features, then an MLP, then L2 normalisation. Training uses in-batch negatives: a softmax over the
batch's positive items with a temperature and a log-Q correction, so that popular items (which
show up as negatives far more often than a uniform sampler would draw them) are not pushed down
just for being popular (Yi et al., RecSys 2019).

Matryoshka widths (Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022): with
nested widths w_1 < ... < w_n = d the same loss is also computed on the first w_i coordinates of
both towers' vectors and the losses are summed, so the leading coordinates carry the most
information and a served vector can be cut to a prefix. **Scoring a prefix** (the contract for
serving, `prefix_vectors`): take the first `width` coordinates of the stored unit vectors and
L2-normalise them again, user and item alike, then take the inner product (the cosine of the
prefixes). That is what the loss trains: a prefix of a unit vector is not a unit vector, and a
plain inner product of raw prefixes would weigh each item by its prefix norm, which training
never constrained. For a ranking, re-normalising the query prefix changes no order (one positive
factor per query), so an index may hold the re-normalised item prefixes and score raw query
prefixes; the scores are then cosines times the query prefix norm. Width d needs no
re-normalisation (the stored vectors are unit vectors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor

from plexrec.features.errors import ConfigError


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0
        ) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class Tower(nn.Module):
    """One side: layout module outputs (in the layout's feature order) ++ dense side columns ->
    MLP -> unit vector. `dense_index` picks the side's columns out of the batch's dense matrix."""
    if TYPE_CHECKING:  # buffers; a runtime annotation would trip TorchScript
        dense_index: torch.Tensor

    def __init__(self, embeddings: nn.Module, feature_names: Sequence[str], embedding_dim: int,
                 dense_index: Sequence[int], hidden: Sequence[int], dim: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not feature_names and not dense_index:
            raise ConfigError("two-tower: a tower has neither sparse nor dense features")
        self.embeddings = embeddings
        self.feature_names = list(feature_names)
        self.embedding_dim = embedding_dim
        self.register_buffer("dense_index", torch.tensor(list(dense_index), dtype=torch.long),
                             persistent=False)
        self.num_dense = len(dense_index)
        self.dim = dim
        self.mlp = mlp(len(self.feature_names) * embedding_dim + self.num_dense, hidden, dim,
                       dropout)

    def head(self, pooled: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """MLP + normalisation on [B, n_sparse * emb_dim] pooled and [B, n_dense] side columns;
        shared with the exported (unsharded, padded-input) user tower."""
        x = torch.cat([pooled, dense], dim=1) if self.num_dense else pooled
        return F.normalize(self.mlp(x), dim=1)

    def forward(self, kjt: KeyedJaggedTensor, dense: torch.Tensor) -> torch.Tensor:
        out = self.embeddings(kjt)
        pooled = torch.cat([out[name] for name in self.feature_names], dim=1)
        side_dense = dense.index_select(1, self.dense_index) if self.num_dense else dense[:, :0]
        return self.head(pooled, side_dense)


class TwoTower(nn.Module):
    """forward(dense, kjt) -> (user vectors [B, dim], item vectors [B, dim]) of the same rows.

    `matryoshka`: the nested prefix widths it is trained at (ending at `dim`; empty: only the
    full width), kept on the model so evaluation and export know which prefixes are meant."""

    def __init__(self, user: Tower, item: Tower, temperature: float = 0.05,
                 matryoshka: Sequence[int] = ()) -> None:
        super().__init__()
        if user.dim != item.dim:
            raise ConfigError(f"two-tower: user width {user.dim} != item width {item.dim}")
        if temperature <= 0:
            raise ConfigError(f"two-tower: temperature = {temperature} must be > 0")
        self.user = user
        self.item = item
        self.temperature = temperature
        self.matryoshka = check_widths(matryoshka, user.dim)

    @property
    def dim(self) -> int:
        return self.user.dim

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user(kjt, dense), self.item(kjt, dense)


def log_q_from_counts(counts: np.ndarray) -> torch.Tensor:
    """log of each item's chance to be a batch positive, from training positive counts; unseen
    items get the floor of one count (they never appear in a batch, so it only avoids -inf)."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.from_numpy(np.log(counts / counts.sum())).float()


Negatives = tuple[torch.Tensor, torch.Tensor]


def sampled_softmax_loss(user: torch.Tensor, item: torch.Tensor, item_ids: torch.Tensor,
                         log_q: torch.Tensor | None, temperature: float,
                         negatives: Negatives | None = None) -> torch.Tensor:
    """In-batch sampled softmax: row i's positive is column i; the other columns are negatives,
    and with `negatives` (vectors [M, d], item ids [M]: corpus items sampled apart, as in Mixed
    Negative Sampling, Yang et al., WWW 2020) M more columns follow.

    logits[i, j] = <u_i, v_j> / T - log q(item_j), q the proposal the columns were drawn from.
    Columns holding the same item as row i's positive are masked: the same item is not its own
    negative."""
    candidates, candidate_ids = item, item_ids
    if negatives is not None:
        candidates = torch.cat([item, negatives[0]])
        candidate_ids = torch.cat([item_ids, negatives[1]])
    logits = user @ candidates.T / temperature
    if log_q is not None:
        logits = logits - log_q[candidate_ids].unsqueeze(0)
    same = item_ids.unsqueeze(1) == candidate_ids.unsqueeze(0)
    rows = torch.arange(len(user), device=user.device)
    same[rows, rows] = False
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, rows)


def width_problem(widths: Sequence[int], dim: int) -> str | None:
    """What is wrong with nested prefix widths for vectors of width `dim`, or None: they must be
    strictly increasing, each >= 1 and dividing `dim`, the last equal to `dim` (the full vector
    is always trained)."""
    if any(w < 1 for w in widths):
        return "each width must be >= 1"
    if any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
        return "widths must be strictly increasing"
    if widths and widths[-1] > dim:
        return f"{widths[-1]} is larger than the vector width {dim}"
    bad = [w for w in widths if dim % w]
    if bad:
        return f"{bad[0]} does not divide the vector width {dim}"
    if widths and widths[-1] != dim:
        return f"the last width must be the vector width {dim}"
    return None


def check_widths(widths: Sequence[int], dim: int) -> tuple[int, ...]:
    """`widths` as a tuple, or a ConfigError (see width_problem). Empty stays empty (off)."""
    out = tuple(int(w) for w in widths)
    problem = width_problem(out, dim)
    if problem:
        raise ConfigError(f"two-tower: matryoshka widths {list(out)}: {problem}")
    return out


def prefix_vectors(vectors: torch.Tensor, width: int) -> torch.Tensor:
    """The first `width` coordinates, L2-normalised again: how a prefix is scored (see the
    module docstring). The full width is returned as is (already unit vectors)."""
    if width == vectors.shape[-1]:
        return vectors
    if not 1 <= width <= vectors.shape[-1]:
        raise ValueError(f"prefix width {width} outside 1..{vectors.shape[-1]}")
    return F.normalize(vectors[..., :width], dim=-1)


def matryoshka_loss(user: torch.Tensor, item: torch.Tensor, item_ids: torch.Tensor,
                    log_q: torch.Tensor | None, temperature: float, widths: Sequence[int],
                    weights: Sequence[float] | None = None,
                    negatives: Negatives | None = None) -> torch.Tensor:
    """The sampled-softmax loss summed over nested prefixes (optionally weighted, one weight
    per width), each prefix re-normalised so every width is trained on cosines under the same
    temperature and log-Q correction. With `widths = [dim]` it is `sampled_softmax_loss`."""
    weights = list(weights) if weights else [1.0] * len(widths)
    if len(weights) != len(widths):
        raise ValueError(f"{len(weights)} matryoshka weights for {len(widths)} widths")
    total = user.new_zeros(())
    for width, weight in zip(widths, weights, strict=True):
        cut = None if negatives is None else (prefix_vectors(negatives[0], width),
                                              negatives[1])
        total = total + weight * sampled_softmax_loss(
            prefix_vectors(user, width), prefix_vectors(item, width), item_ids, log_q,
            temperature, cut)
    return total


class PaddedUserTower(nn.Module):
    """The user tower for serving: no TorchRec, no KJT, TorchScript-able.

    forward(sparse [B, sum(max_length)] ids padded with -1, one block per user sparse feature in
    order; dense [B, n_dense]) -> [B, width]. Each feature's layout (hashing, shared tables,
    mixed-dim projections) is folded into an `effective` table: row i = the layout's output for a
    bag holding only id i, minus its output for an empty bag (`base`). Layout outputs are affine
    in the pooled rows, so a bag's output is base + sum of its rows (divided by the bag length
    for mean-pooled features), which reproduces the layout exactly for every layout kind."""
    if TYPE_CHECKING:  # buffers; a runtime annotation would trip TorchScript
        table: torch.Tensor
        base: torch.Tensor

    def __init__(self, effective: Sequence[torch.Tensor], base: torch.Tensor,
                 max_lengths: Sequence[int], mean: Sequence[bool], head: nn.Module) -> None:
        super().__init__()
        if not (len(effective) == len(max_lengths) == len(mean) == base.shape[0]):
            raise ValueError("one effective table, base row, max_length and pooling per feature")
        sizes = [int(t.shape[0]) for t in effective]
        self.register_buffer("table", torch.cat(list(effective)).contiguous())
        self.register_buffer("base", base.contiguous())
        self.row_offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self.sizes = sizes
        self.max_lengths = [int(m) for m in max_lengths]
        self.mean = [bool(m) for m in mean]
        self.head = head

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        pooled: list[torch.Tensor] = []
        start = 0
        for f in range(len(self.sizes)):
            block = sparse[:, start:start + self.max_lengths[f]]
            start += self.max_lengths[f]
            present = block >= 0
            ids = torch.where(present & (block < self.sizes[f]), block, torch.zeros_like(block))
            rows = self.table[ids + self.row_offsets[f]] * present.unsqueeze(2).to(
                self.table.dtype)
            out = rows.sum(dim=1) + self.base[f]
            if self.mean[f]:
                count = present.sum(dim=1).clamp(min=1).to(out.dtype)
                out = out / count.unsqueeze(1)
            pooled.append(out)
        x = torch.cat(pooled, dim=1)
        if dense.shape[1] > 0:
            x = torch.cat([x, dense.to(x.dtype)], dim=1)
        return F.normalize(self.head(x), dim=1)


@torch.no_grad()
def effective_tables(embeddings: nn.Module, feature_names: Sequence[str],
                     cardinalities: Sequence[int], chunk: int = 65536
                     ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per feature: the layout module's output for each single-id bag minus its output for the
    empty bag, and the empty-bag outputs [n_features, dim] (see PaddedUserTower)."""
    names = list(feature_names)
    n = len(names)
    empty = KeyedJaggedTensor(keys=names, values=torch.zeros(0, dtype=torch.long),
                              lengths=torch.zeros(n, dtype=torch.int32), stride=1)
    empty_out = embeddings(empty)
    base = torch.stack([empty_out[name][0] for name in names])
    tables = []
    for f, (name, card) in enumerate(zip(names, cardinalities, strict=True)):
        parts = []
        for start in range(0, card, chunk):
            ids = torch.arange(start, min(start + chunk, card), dtype=torch.long)
            b = len(ids)
            lengths = torch.zeros(n, b, dtype=torch.int32)
            lengths[f] = 1
            kjt = KeyedJaggedTensor(keys=names, values=ids, lengths=lengths.reshape(-1), stride=b)
            parts.append(embeddings(kjt)[name] - base[f])
        tables.append(torch.cat(parts).float())
    return tables, base.float()


def padded_user_tower(tower: Tower, cardinalities: Sequence[int], max_lengths: Sequence[int],
                      mean: Sequence[bool]) -> PaddedUserTower:
    """An unsharded, TorchRec-free copy of a trained tower (its layout module must be local)."""
    import copy

    was_training = tower.training
    tower.eval()
    tables, base = effective_tables(tower.embeddings, tower.feature_names, cardinalities)
    tower.train(was_training)
    return PaddedUserTower(tables, base, max_lengths, mean, copy.deepcopy(tower.mlp).eval())
