"""Settings of the vector store, passed whole to `VectorStore.open`."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StoreError

INDEX_KINDS = ("flat", "hnsw")
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
SHORTLIST_CODECS = ("fp16", "float32")


@dataclass(frozen=True)
class IndexConfig:
    """How the indexes are built and kept.

    kind: "flat" (exact inner product, the default) or "hnsw" (approximate graph
        search for large collections; deletes become tombstones, see faiss_index.py).
    shortlist_codec: how the flat kind stores the 64-d index: "fp16" (default; half the
        memory and a faster scan than float32, see index/README.md; hits are
        re-scored in float32, so scores stay exact) or "float32".
    adaptive_factor: adaptive search re-ranks the top `k * adaptive_factor` of the
        64-d index with the full vectors, and never fewer than
        `adaptive_min_shortlist`: at k=1 a shortlist of 10 loses half the R@1 of
        text->image search on photographs (docs/model.md), 100 loses little.
    max_k: largest k a search may ask for.
    filter_exact_threshold: a filtered search whose filter matches at most this
        many items scores them directly (exact at any dims) instead of scanning
        the index with an id selector.
    snapshot_every: write the FAISS files after this many changes (and on close).
        The SQLite commit, not the snapshot, is what makes a write durable.
    synchronous: SQLite `synchronous` pragma. "FULL" fsyncs the WAL at every commit,
        so an acknowledged write survives a process kill and a power loss; "NORMAL"
        survives a process kill (`kill -9`) but may lose the last commits on power loss.
    verify_checksums: check the CRC32 of the FAISS files on open (a corrupt file is
        then rebuilt from SQLite instead of silently serving wrong vectors).
    faiss_threads: OpenMP threads FAISS may use per search, set process-wide on open
        (None leaves FAISS's default, one per core). The service searches from many
        threads at once, so parallelism comes from concurrent requests; OpenMP threads
        on top oversubscribe the cores, which slows each search on a busy machine.
    blas_threads: threads of the OpenBLAS libraries loaded in the process (numpy's, used
        for the 128/256-d scans and filtered scoring, and FAISS's), set on open through
        threadpoolctl; None leaves them. OpenBLAS threads spin after each call, which
        slows the next FAISS search on a busy machine. MKL (torch) is untouched.
    rebuild_progress_min: show a tqdm progress bar for rebuilds of at least this
        many items (and only when stderr is a terminal).
    """

    kind: str = "flat"
    shortlist_codec: str = "fp16"
    adaptive_factor: int = 10
    adaptive_min_shortlist: int = 100
    max_k: int = 1000
    filter_exact_threshold: int = 20_000
    snapshot_every: int = 100_000
    synchronous: str = "FULL"
    verify_checksums: bool = True
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    hnsw_max_tombstone_fraction: float = 0.2
    faiss_threads: int | None = 1
    blas_threads: int | None = 1
    rebuild_progress_min: int = 20_000

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise StoreError(f"IndexConfig.kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.shortlist_codec not in SHORTLIST_CODECS:
            raise StoreError(
                f"IndexConfig.shortlist_codec must be one of {SHORTLIST_CODECS}, "
                f"got {self.shortlist_codec!r}"
            )
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise StoreError(
                f"IndexConfig.synchronous must be one of {SYNCHRONOUS_MODES}, "
                f"got {self.synchronous!r}"
            )
        for name in (
            "adaptive_factor",
            "adaptive_min_shortlist",
            "max_k",
            "snapshot_every",
            "hnsw_m",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise StoreError(f"IndexConfig.{name} must be a positive int, got {value!r}")
        for name in ("faiss_threads", "blas_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise StoreError(
                    f"IndexConfig.{name} must be None or a positive int, got {value!r}"
                )
        if not 0.0 < self.hnsw_max_tombstone_fraction <= 1.0:
            raise StoreError(
                "IndexConfig.hnsw_max_tombstone_fraction must be in (0, 1], "
                f"got {self.hnsw_max_tombstone_fraction!r}"
            )
