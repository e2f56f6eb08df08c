"""How the candidate index is built (the `[index]` table of the server config)."""

from __future__ import annotations

from pydantic import Field, field_validator

from plexrec.features.config import Section
from plexrec.serving.index_registry import INDEXES


class IndexConfig(Section):
    """How the candidate index is built. Corpora below `exact_threshold` items are searched
    exactly; larger ones with FAISS `kind`. The default `auto` builds IVF-Flat (~8 s on 1M x 64,
    2 cores) and keeps it when the nprobe that reaches `target_recall` scans at most
    `auto_max_scan` of the corpus (clustered, trained-like vectors: <1%, ~70x exact search);
    otherwise (isotropic vectors need ~half the lists, 1.4x exact) it builds `pq`, PQ fast-scan
    codes with an exact re-rank, which is not slowed by a lack of clusters. HNSW is kept as a
    kind but not chosen: on 1M x 64 isotropic vectors it took 2-8 min to build and stayed below
    recall 0.65 at efSearch 1024 (M=16, efConstruction 40; inner product, cosine or the L2
    reduction), and an
    inner-product graph plateaued at ~0.92 on the clustered corpus.

    The compressed kinds (`ivf_sq8`, `ivf_fp16`, `ivf_pq`, `pq`, `binary`) re-rank their first
    stage's best `k * rerank_factor` candidates on the float32 rows (0: the kind's own factor);
    for the flat ones (`pq`, `binary`) that factor is the search effort raised at build time."""

    exact_threshold: int = Field(100_000, ge=0)
    kind: str = "auto"
    hnsw_m: int = Field(32, ge=2)
    hnsw_ef_construction: int = Field(64, ge=1)
    hnsw_ef_search: int = Field(256, ge=1)
    ivf_nlist: int = Field(0, ge=0)
    ivf_nprobe: int = Field(8, ge=1)
    rerank_factor: int = Field(0, ge=0)
    pq_m: int = Field(0, ge=0)
    binary_itq: bool = True
    itq_iterations: int = Field(20, ge=0, le=1000)
    auto_max_scan: float = Field(0.03, gt=0.0, le=1.0)
    auto_fallback: str = "pq"
    recall_queries: int = Field(200, ge=1)
    recall_k: int = Field(100, ge=1)
    target_recall: float = Field(0.95, ge=0.0, le=1.0)
    max_search_effort: int = Field(2048, ge=1)
    seed: int = 0

    @field_validator("kind", "auto_fallback")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in INDEXES:
            raise ValueError(f"expected one of {', '.join(INDEXES)}")
        return kind

    @field_validator("auto_fallback")
    @classmethod
    def _not_auto(cls, kind: str) -> str:
        if kind == "auto":
            raise ValueError("the fallback of auto must be a concrete kind")
        return kind
