"""The candidate index kinds above the exact threshold, one line each: `[index] kind` ->
"module:class" of a `serving.index.faiss_index.FaissIndex`. Names only, so the config checks a
kind without importing FAISS. A new kind is `serving/index/<name>.py` plus one line below."""

from __future__ import annotations

INDEXES: dict[str, str] = {
    "auto": "plexrec.serving.index.auto:AutoIndex",
    "ivf": "plexrec.serving.index.faiss_ivf:IVFIndex",
    "hnsw": "plexrec.serving.index.faiss_hnsw:HNSWIndex",
    "ivf_sq8": "plexrec.serving.index.faiss_ivf_sq8:IVFSQ8Index",
    "ivf_fp16": "plexrec.serving.index.faiss_ivf_fp16:IVFFP16Index",
    "ivf_pq": "plexrec.serving.index.faiss_ivf_pq:IVFPQIndex",
    "pq": "plexrec.serving.index.faiss_pq:PQIndex",
    "binary": "plexrec.serving.index.faiss_binary:BinaryIndex",
}
