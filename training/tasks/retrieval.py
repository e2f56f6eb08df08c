"""Two-tower retrieval as a trainer task: the model of training/two_tower.py under DMP, trained on
positive interactions with in-batch negatives; validation and test are full-corpus Recall@K /
NDCG@K on the leave-last-out split (every item ranked, each user's seen items masked), and with
`[retrieval] matryoshka` also at each trained prefix width (`recall_at_50_w16`, ...)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from plexrec.features.batching import BatchLoader, Splits
from plexrec.features.errors import ConfigError
from plexrec.features.history import known_at
from plexrec.models.layouts import LayoutConfig
from plexrec.models.two_tower import (
    TwoTower,
    matryoshka_loss,
    prefix_vectors,
    sampled_softmax_loss,
)
from plexrec.training.retrieval_metrics import LeaveLastOut, evaluate_topk
from plexrec.training.task import BuiltModel
from plexrec.training.two_tower import (
    RetrievalConfig,
    TwoTowerParts,
    build_two_tower,
    corpus_rows,
    entity_rows,
    evaluate_prefixes,
    first_targets,
    held_rows,
    item_log_q,
    key_names,
    make_split,
    metric_key,
    phase_of,
    side_features,
    training_pairs,
    vector_scorer,
    width_key,
    with_history,
)

INBATCH_KS = (1, 10)

RETRIEVAL_DEFAULTS: dict[str, Any] = {"temperature": 0.05, "log_q": True, "holdout": 5}


def retrieval_config(cfg: Any) -> RetrievalConfig:
    """The retrieval settings of a RunConfig: the towers' MLP is `[model] deep_mlp` (the last
    entry is the vector width); temperature, log_q, holdout, ks, matryoshka... come from an
    optional `[retrieval]` table; batch size, learning rate and steps from [data], [optim] and
    [train]."""
    table = dict(getattr(cfg, "retrieval", None) or {})
    allowed = ("temperature", "log_q", "log_q_weight", "holdout", "ks", "positives", "monitor",
               "final_fit", "train_rows", "history", "corpus_negatives", "matryoshka",
               "matryoshka_weights")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{cfg.source} [retrieval]: unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(allowed)})")
    mlp_widths = list(cfg.model.deep_mlp)
    if not mlp_widths:
        raise ConfigError(f"{cfg.source} [model] deep_mlp: the two-tower model needs at least "
                          "the output width")
    values = {**RETRIEVAL_DEFAULTS, **table, "dim": mlp_widths[-1], "hidden": mlp_widths[:-1],
              "dropout": cfg.model.dropout,
              "lr": cfg.optim.dense_lr, "weight_decay": cfg.optim.weight_decay,
              "batch_size": cfg.data.batch_size, "epochs": cfg.train.epochs,
              "max_steps": cfg.train.max_steps, "seed": cfg.train.seed}
    return RetrievalConfig.from_dict(values, f"{cfg.source} [retrieval]")


class InBatchEvaluator:
    """Validation during training: each positive row's item ranked among the other items of its
    evaluation batch (same-item columns masked). Cheap and batch-local, so it works on sharded
    models; the full-catalogue Recall@K / NDCG@K come from `RetrievalTask.final_metrics`."""

    def __init__(self, dim: int, item_key: str, ks: Sequence[int] = INBATCH_KS) -> None:
        self.dim, self.item_key, self.ks = dim, item_key, tuple(ks)
        self.hits = torch.zeros(len(self.ks), dtype=torch.float64)
        self.count = 0

    def update(self, batch: Any, output: torch.Tensor) -> None:
        user, item = output[:, :self.dim].float(), output[:, self.dim:].float()
        ids = batch.sparse_features[self.item_key].values().to(output.device)
        scores = user @ item.T
        same = ids.unsqueeze(0) == ids.unsqueeze(1)
        same.fill_diagonal_(False)
        scores = scores.masked_fill(same, float("-inf"))
        rank = (scores > scores.diagonal().unsqueeze(1)).sum(dim=1)
        for j, k in enumerate(self.ks):
            self.hits[j] += float((rank < k).sum())
        self.count += len(ids)

    def compute(self) -> dict[str, float]:
        import torch.distributed as dist

        totals = torch.cat([self.hits, torch.tensor([float(self.count)], dtype=torch.float64)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        n = max(float(totals[-1]), 1.0)
        out = {f"inbatch_recall_at_{k}": float(totals[j]) / n for j, k in enumerate(self.ks)}
        out["examples"] = float(totals[-1])
        return out


@dataclass(frozen=True)
class CorpusPhase:
    """What one full-corpus evaluation ranks: the targets (user -> held-out items), the items to
    mask, and which row carries each user's and each item's vector (-1: none); with a history
    feature, the rows it is known over and each user row's first held-out target (its bound)."""

    targets: dict[int, np.ndarray]
    seen: dict[int, np.ndarray]
    user_of_row: np.ndarray
    item_of_row: np.ndarray
    rows: np.ndarray
    ks: tuple[int, ...]
    known: np.ndarray
    user_rows: np.ndarray
    bounds: np.ndarray


@dataclass
class CorpusBatch:
    """An evaluation batch over entity rows (sorted, as BatchLoader.batch orders them)."""

    batch: Any
    rows: np.ndarray
    phase: CorpusPhase

    def to(self, device: torch.device, non_blocking: bool = False) -> CorpusBatch:
        return CorpusBatch(self.batch.to(device, non_blocking=non_blocking), self.rows,
                           self.phase)


def corpus_phase(data: Any, split: LeaveLastOut, phase: str, ks: Sequence[int]) -> CorpusPhase:
    targets, seen, before = phase_of(split, phase)
    c = corpus_rows(data, before)
    user_of_row = np.full(data.num_rows, -1, dtype=np.int64)
    item_of_row = np.full(data.num_rows, -1, dtype=np.int64)
    users = np.array(sorted(targets), dtype=np.int64)
    keep = np.isin(c.users, users)
    user_of_row[c.user_rows[keep]] = c.users[keep]
    item_of_row[c.item_rows] = c.items
    rows = np.flatnonzero((user_of_row >= 0) | (item_of_row >= 0))
    user_rows = np.flatnonzero(user_of_row >= 0)
    return CorpusPhase(targets, seen, user_of_row, item_of_row, rows, tuple(ks), before,
                       user_rows, first_targets(data, held_rows(split, phase), user_rows))


class CorpusLoader:
    """The evaluation loader of the full-corpus metrics: one pass over the rows that carry the
    evaluated users' and all items' vectors. The rows are padded (with repeats of the first) to a
    multiple of world_size * batch_size's share so every rank runs the same batches, whose
    sharded forward passes are collectives."""

    def __init__(self, data: Any, phase: CorpusPhase, batch_size: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.inner = BatchLoader(known_at(data, phase.known, phase.user_rows, phase.bounds),
                                 None, batch_size)
        self.phase, self.batch_size = phase, batch_size
        rows = phase.rows
        share = -(-len(rows) // world_size)
        if len(rows):
            rows = np.concatenate([rows, np.full(share * world_size - len(rows), rows[0])])
        self.rows = np.sort(rows[rank * share:(rank + 1) * share])

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """One fixed pass: the epoch changes nothing."""

    def skip(self, n_batches: int) -> None:
        if n_batches:
            raise ConfigError("an evaluation loader cannot skip batches")

    def __iter__(self) -> Iterator[CorpusBatch]:
        for start in range(0, len(self.rows), self.batch_size):
            idx = self.rows[start:start + self.batch_size]
            yield CorpusBatch(self.inner.batch(idx), idx, self.phase)


class CorpusEvaluator:
    """Full-corpus Recall@K / NDCG@K during training: collects the vectors of the evaluated
    users and of every item from the corpus batches of each rank, gathers them on all ranks (a
    collective) and ranks all items for each user, masking what they had seen. Every rank
    computes the same figures, so early stopping agrees everywhere. `widths`: prefix widths
    also ranked on their own (re-normalised prefixes, as served), reported as
    `recall_at_50_w16`...; early stopping stays on the full width."""

    def __init__(self, dim: int, widths: Sequence[int] = ()) -> None:
        self.dim = dim
        self.widths = tuple(widths)
        self.phase: CorpusPhase | None = None
        self.users: list[tuple[np.ndarray, np.ndarray]] = []
        self.items: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, batch: CorpusBatch, output: torch.Tensor) -> None:
        self.phase = batch.phase
        out = output.detach().float().cpu()
        for ids, vecs, store in ((batch.phase.user_of_row[batch.rows], out[:, :self.dim],
                                  self.users),
                                 (batch.phase.item_of_row[batch.rows], out[:, self.dim:],
                                  self.items)):
            keep = ids >= 0
            store.append((ids[keep], vecs[torch.from_numpy(keep)].numpy()))

    def _gathered(self, parts: list[tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, torch.Tensor]:
        import torch.distributed as dist

        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        vecs = (np.concatenate([p[1] for p in parts]) if parts
                else np.zeros((0, self.dim), np.float32))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            every: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(every, (ids, vecs))
            ids = np.concatenate([e[0] for e in every])
            vecs = np.concatenate([e[1] for e in every])
        uniq, first = np.unique(ids, return_index=True)  # padding repeats a row
        return uniq, torch.from_numpy(np.ascontiguousarray(vecs[first]))

    def compute(self) -> dict[str, float]:
        users, user_vecs = self._gathered(self.users)
        items, item_vecs = self._gathered(self.items)
        phase = self.phase
        if phase is None or not phase.targets:
            return {"users": 0.0}
        score = vector_scorer(users, user_vecs, item_vecs, "(gathered vectors)")
        metrics = evaluate_topk(score, phase.targets, phase.seen, items, phase.ks)
        out = {metric_key(k): float(v) for k, v in metrics.items()}
        for width in self.widths:
            score = vector_scorer(users, prefix_vectors(user_vecs, width),
                                  prefix_vectors(item_vecs, width), "(gathered vectors)")
            metrics = evaluate_topk(score, phase.targets, phase.seen, items, phase.ks)
            out |= {width_key(k, width): float(v) for k, v in metrics.items() if k != "users"}
        return out


NEGATIVE_LABEL = -1.0


class MixedNegativeLoader:
    """Training batches of positive pairs followed by `count` items drawn uniformly from the
    corpus (each from its latest row, as the full-corpus ranking takes item vectors), labelled
    NEGATIVE_LABEL so the loss uses them as negative columns only. The draws are a function of
    the seed, epoch and batch, so a resumed run draws the same items."""

    def __init__(self, inner: BatchLoader, item_rows: np.ndarray, count: int, seed: int) -> None:
        if len(item_rows) == 0:
            raise ConfigError("corpus negatives: the data has no item rows")
        self.inner, self.item_rows, self.count, self.seed = inner, item_rows, count, seed
        self._skip = 0

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def skip(self, n_batches: int) -> None:
        self.inner.skip(n_batches)
        self._skip = n_batches

    def __iter__(self) -> Iterator[Any]:
        from torchrec.datasets.utils import Batch

        start, self._skip = self._skip, 0
        for b, batch in enumerate(self.inner, start=start):
            rng = np.random.default_rng([self.seed, self.inner.epoch, b, self.inner.rank])
            drawn = self.item_rows[rng.integers(0, len(self.item_rows), self.count)]
            extra = self.inner.batch(drawn)
            yield Batch(dense_features=torch.cat([batch.dense_features, extra.dense_features]),
                        sparse_features=_stack(batch.sparse_features, extra.sparse_features),
                        labels=torch.cat([batch.labels,
                                          torch.full_like(extra.labels, NEGATIVE_LABEL)]))


def _stack(a: Any, b: Any) -> Any:
    """Two KJTs with the same keys as one batch: a's rows, then b's."""
    from torchrec import KeyedJaggedTensor

    da, db, keys = a.to_dict(), b.to_dict(), a.keys()
    values, lengths = [], []
    for key in keys:
        values += [da[key].values(), db[key].values()]
        lengths += [da[key].lengths(), db[key].lengths()]
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values),
                             lengths=torch.cat(lengths).to(torch.int32),
                             stride=a.stride() + b.stride())


class RetrievalTask:
    """Two-tower retrieval on positive interactions with in-batch negatives.

    Hooks beyond training/task.Task: `split(cfg, data)` (leave-last-out: each user's last
    `holdout` positives test, the `holdout` before them validation),
    `final_metrics(model, data, cfg)` (full-catalogue Recall@K / NDCG@K of an unsharded model,
    also per trained prefix width) and `result_info()` (settings a result should record: the
    trained prefix widths).
    The evaluator ranks the full corpus too, sharded: the `[retrieval] monitor` metric on the
    validation positives is what early stopping and the best checkpoint follow."""

    name = "retrieval"
    primary_metric = "recall_at_50"
    metric_names: tuple[str, ...] = tuple(
        metric_key(f"{m}@{k}") for m in ("recall", "ndcg") for k in (10, 50, 100))
    model_kinds: tuple[str, ...] = ("two_tower",)

    def __init__(self) -> None:
        self.config: RetrievalConfig | None = None
        self.user_key = self.item_key = ""
        self.log_q: torch.Tensor | None = None
        self._split: LeaveLastOut | None = None
        self._phases: dict[str, CorpusPhase] = {}

    def configure(self, cfg: Any, data: Any) -> RetrievalTask:
        self.config = retrieval_config(cfg)
        self.user_key, self.item_key = key_names(data)
        self.primary_metric = metric_key(self.config.monitor)
        names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in self.config.ks]
        self.metric_names = (*(metric_key(n) for n in names),
                             *(width_key(n, w) for w in self.config.prefix_widths
                               for n in names))
        return self

    def result_info(self) -> dict[str, Any]:
        """For the run's result (and so the snapshot): the prefix widths the vectors were
        trained to be cut at; [] when matryoshka is off (only the full width is meant)."""
        return {"matryoshka_widths": list(self._cfg().matryoshka)}

    @property
    def catalogue(self) -> tuple[str, ...]:
        """Features that keep every id of the cache: the user and item keys (see
        features/training_view.py)."""
        return (self.user_key, self.item_key)

    def _cfg(self) -> RetrievalConfig:
        if self.config is None:
            raise ConfigError("RetrievalTask used before configure(cfg, data)")
        return self.config

    def leave_last_out(self, data: Any) -> LeaveLastOut:
        if self._split is None:
            holdout = self._cfg().holdout
            self._split = make_split(data, holdout, val_holdout=holdout)
        return self._split

    def split(self, cfg: Any, data: Any) -> Any:
        """The leave-last-out split; with `train_rows = "all"` (the final fit) every row
        trains and the held-out rows are evaluated on only because the trainer always does."""
        s = self.leave_last_out(data)
        if self._cfg().train_rows == "all":
            return Splits(train=np.arange(data.num_rows, dtype=np.int64), val=s.val_rows,
                          test=s.test_rows)
        return Splits(train=s.train_rows, val=s.val_rows, test=s.test_rows)

    def data_view(self, data: Any, splits: Splits) -> Any:
        """The run's view plus the user's history feature (`[retrieval] history`), known over
        the training pairs: what training batches see."""
        cfg = self._cfg()
        return with_history(data, cfg, training_pairs(data, splits.train, cfg.positives))

    def validate(self, cfg: Any, data: Any) -> None:
        key_names(data)
        side_features(data, "user")
        side_features(data, "item")
        if cfg.data.batch_size < 2:
            raise ConfigError(f"{cfg.source} [data] batch_size: in-batch negatives need >= 2")

    def build_parts(self, cfg: Any, data: Any, device: str | torch.device) -> TwoTowerParts:
        layout = LayoutConfig.from_dict(cfg.layout, f"{cfg.source} [layout]")
        return build_two_tower(data, layout, self._cfg(), device)

    def build(self, cfg: Any, data: Any, device: str | torch.device) -> Any:
        parts = self.build_parts(cfg, data, device)
        report = ([replace(r, name=f"user.{r.name}") for r in parts.user_layout.report()]
                  + [replace(r, name=f"item.{r.name}") for r in parts.item_layout.report()])
        tables = [t.name for lay in (parts.user_layout, parts.item_layout)
                  for t in lay.table_configs()]
        return BuiltModel(module=parts.model, report=report,
                          embedding_params=parts.embedding_params,
                          embedding_bytes=parts.embedding_bytes,
                          table_names=list(dict.fromkeys(tables)),
                          describe="user tower " + parts.user_layout.describe()
                          + "\nitem tower " + parts.item_layout.describe())

    def loader(self, data: Any, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int,
               rank: int, world_size: int, drop_last: bool) -> Any:
        """Training (shuffled): batches of the rows trained on as pairs (`[retrieval]
        positives`). The split's validation or test rows: a CorpusLoader over the rows that carry
        the users' and items' vectors for the full-corpus ranking. Other rows: their positives
        in order."""
        cfg = self._cfg()
        if not shuffle:
            split = self.leave_last_out(data)
            for phase, held in (("val", split.val_rows), ("test", split.test_rows)):
                if np.array_equal(np.asarray(rows), held):
                    return CorpusLoader(data, self.corpus_phase(data, phase), batch_size, rank,
                                        world_size)
        pairs = training_pairs(data, rows, cfg.positives if shuffle else "threshold")
        if shuffle and cfg.log_q and self.log_q is None:
            self.log_q = self._proposal(item_log_q(data, pairs, self.item_key), batch_size,
                                        data) * cfg.log_q_weight
        loader = BatchLoader(data, pairs, batch_size, shuffle=shuffle, seed=seed, rank=rank,
                             world_size=world_size, drop_last=drop_last)
        if not shuffle or not cfg.corpus_negatives:
            return loader
        return MixedNegativeLoader(loader, entity_rows(data, self.item_key)[1],
                                   cfg.corpus_negatives, seed)

    def _proposal(self, log_p: torch.Tensor, batch_size: int, data: Any) -> torch.Tensor:
        """log of each item's expected count among a batch's columns: batch_size * p(item) from
        the in-batch positives, plus M / N with M corpus negatives drawn uniformly from N items
        (the mixture's correction; without corpus negatives a constant shift of log p)."""
        cfg = self._cfg()
        if not cfg.corpus_negatives:
            return log_p
        items = len(entity_rows(data, self.item_key)[0])
        return torch.log(batch_size * log_p.exp() + cfg.corpus_negatives / max(items, 1))

    def corpus_phase(self, data: Any, phase: str) -> CorpusPhase:
        if phase not in self._phases:
            self._phases[phase] = corpus_phase(data, self.leave_last_out(data), phase,
                                               self._cfg().ks)
        return self._phases[phase]

    def forward(self, model: Any, batch: Any) -> torch.Tensor:
        if isinstance(batch, CorpusBatch):
            batch = batch.batch
        user, item = model(batch.dense_features, batch.sparse_features)
        return torch.cat([user, item], dim=1)

    def loss(self, batch: Any, output: torch.Tensor) -> torch.Tensor:
        cfg = self._cfg()
        user, item = output[:, :cfg.dim], output[:, cfg.dim:]
        ids = batch.sparse_features[self.item_key].values().to(output.device)
        log_q = self.log_q.to(output.device) if self.log_q is not None else None
        negatives = None
        drawn = batch.labels.to(output.device) == NEGATIVE_LABEL
        if bool(drawn.any()):
            negatives = (item[drawn], ids[drawn])
            user, item, ids = user[~drawn], item[~drawn], ids[~drawn]
        if cfg.matryoshka:
            return matryoshka_loss(user, item, ids, log_q, cfg.temperature, cfg.matryoshka,
                                   cfg.matryoshka_weights or None, negatives)
        return sampled_softmax_loss(user, item, ids, log_q, cfg.temperature, negatives)

    def batch_size(self, batch: Any) -> int:
        """Training pairs only (drawn corpus negatives are not examples)."""
        return int((batch.labels != NEGATIVE_LABEL).sum())

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch if device.type == "cpu" else batch.to(device, non_blocking=True)

    def evaluator(self) -> CorpusEvaluator:
        cfg = self._cfg()
        return CorpusEvaluator(cfg.dim, cfg.prefix_widths)

    def final_metrics(self, model: TwoTower, data: Any, cfg: Any = None) -> dict[str, float]:
        """Full-catalogue test metrics ("recall_at_10", "ndcg_at_100", "recall_at_50_w16", ...)
        of an unsharded model, on the leave-last-out test positives."""
        cfg = self._cfg()
        by_width = evaluate_prefixes(model, data, self.leave_last_out(data),
                                     (cfg.dim, *cfg.prefix_widths), cfg.ks)
        out = {metric_key(k): float(v) for k, v in by_width.pop(cfg.dim).items()}
        for width, metrics in by_width.items():
            out |= {width_key(k, width): float(v) for k, v in metrics.items() if k != "users"}
        return out

