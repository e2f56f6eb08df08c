"""The candidate index kinds above the exact threshold, one line each: `[index] kind` ->
"module:class" of a `serving.index.faiss_index.FaissIndex`. Names only, so the config checks a
kind without importing FAISS. A new kind is `serving/index/<name>.py` plus one line below."""

from __future__ import annotations

INDEXES: dict[str, str] = {
    "ivf": "plexrec.serving.index.faiss_ivf:IVFIndex",
    "hnsw": "plexrec.serving.index.faiss_hnsw:HNSWIndex",
}
