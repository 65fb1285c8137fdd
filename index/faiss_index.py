"""The two FAISS indexes kept in step: the 64-d Matryoshka prefix and the full 512 dims.

Both are `IndexIDMap2` (inner product on unit vectors) whose int64 ids are the
SQLite labels. The 512-d index doubles as the store of full vectors that the
adaptive re-rank and the 128/256-d searches read (`reconstruct_batch`, or a
zero-copy view of the flat storage), so no third copy is kept in memory.

Kinds:
- "flat" (default): exact. The 512-d index is `IndexFlatIP`; the 64-d one holds fp16
  codes (`IndexScalarQuantizer` QT_fp16, `shortlist_codec="fp16"`): half the bytes of
  float32 and a faster scan (index/README.md has the numbers); 64-d results are re-scored in float32 from
  the 512-d storage, so returned scores are exact. `remove_ids` compacts the arrays.
- "hnsw": `IndexHNSWFlat`, approximate, for large collections. HNSW cannot remove
  ids, so a delete (or the old version of an upsert) becomes a tombstone that
  searches exclude with an id selector; when tombstones pass
  `hnsw_max_tombstone_fraction` of the index the graphs are rebuilt from the live
  vectors. IVF was not chosen: it supports `remove_ids` but must be trained on
  data the store may not have yet, and its recall drifts as the collection
  outgrows the trained centroids; HNSW needs no training and stays accurate
  while items arrive.

Not thread-safe for mutation: the caller serialises add/remove against searches.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .atomic import TMP_SUFFIX, atomic_write_bytes, atomic_write_with, file_crc32
from .config import IndexConfig
from .errors import StoreError
from .vectors import EMBED_DIM, SHORTLIST_DIM, truncate

MANIFEST_NAME = "faiss.json"
FORMAT_VERSION = 1
_ROW_CHUNK = 65_536
# Room reserved on load: a quarter of the rows loaded (at least 4,096), so adds after a
# restart do not reallocate until the index has grown by that much.
RESERVE_FRACTION = 4
RESERVE_MIN_ROWS = 4096
SYNC_BYTES = 32 * 2**20


class IndexFileError(StoreError):
    """A FAISS snapshot is missing, corrupt or does not match the configuration."""


@dataclass(frozen=True)
class Snapshot:
    """What a manifest says about the saved indexes."""

    generation: int
    ntotal: int


class LabelFilter:
    """The labels a search filter admits, with their FAISS selector built once, on first use.

    labels: sorted (N,) int64. The selector is only read during searches, so one
    filter may serve concurrent searches.
    """

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self._selector: faiss.IDSelectorBatch | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def selector(self) -> faiss.IDSelectorBatch:
        if self._selector is None:
            self._selector = faiss.IDSelectorBatch(self.labels)
        return self._selector


@dataclass(frozen=True)
class Capture:
    """A snapshot taken in memory (:meth:`MatryoshkaIndexes.capture`), to write later."""

    generation: int
    ntotal: int
    tombstones: np.ndarray
    indexes: dict[int, faiss.Index]  # dims -> the index (a copy, for a capture)


class MatryoshkaIndexes:
    """64-d and 512-d FAISS indexes over the same labels."""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self.index64 = self._new_index(SHORTLIST_DIM)
        self.index512 = self._new_index(EMBED_DIM)
        self._tombstones: set[int] = set()
        self._cache: dict[Any, Any] = {}

    @property
    def _fp16_shortlist(self) -> bool:
        return self.config.kind == "flat" and self.config.shortlist_codec == "fp16"

    def _new_index(self, dims: int) -> faiss.IndexIDMap2:
        if self.config.kind == "flat" and dims == SHORTLIST_DIM and self._fp16_shortlist:
            base = faiss.IndexScalarQuantizer(
                dims, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        elif self.config.kind == "flat":
            base = faiss.IndexFlatIP(dims)
        else:
            base = faiss.IndexHNSWFlat(dims, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = self.config.hnsw_ef_construction
            base.hnsw.efSearch = self.config.hnsw_ef_search
        return faiss.IndexIDMap2(base)

    # ---- state ----

    @property
    def live_count(self) -> int:
        return int(self.index512.ntotal) - len(self._tombstones)

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    def stored_labels(self) -> np.ndarray:
        """Every label held by the FAISS arrays, tombstoned ones included: (ntotal,) int64."""
        return self._id_map()

    def live_labels(self) -> np.ndarray:
        labels = self._id_map()
        if self._tombstones:
            labels = labels[~np.isin(labels, self._tombstone_array())]
        return labels

    def _touch(self) -> None:
        self._cache = {}

    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """Derived arrays (id map, storage view, norms), dropped at every mutation."""
        cache = self._cache
        value = cache.get(key)
        if value is None:
            value = make()
            cache[key] = value
        return value

    def _id_map(self) -> np.ndarray:
        return self._cached("id_map", lambda: faiss.vector_to_array(self.index512.id_map))

    def _tombstone_array(self) -> np.ndarray:
        return self._cached(
            "tombstones", lambda: np.fromiter(sorted(self._tombstones), dtype=np.int64)
        )

    def _storage(self) -> np.ndarray:
        """Zero-copy (ntotal, 512) view of the 512-d vectors, rows in id_map order."""

        def make() -> np.ndarray:
            base = faiss.downcast_index(self.index512.index)
            flat = base if self.config.kind == "flat" else faiss.downcast_index(base.storage)
            n = int(flat.ntotal)
            if n == 0:
                return np.empty((0, EMBED_DIM), dtype=np.float32)
            return faiss.rev_swig_ptr(flat.get_xb(), n * EMBED_DIM).reshape(n, EMBED_DIM)

        return self._cached("storage", make)

    def _prefix_norms(self, dims: int) -> np.ndarray:
        """(ntotal,) float32 norms of the first `dims` columns of every stored vector."""

        def make() -> np.ndarray:
            xb = self._storage()
            norms = np.empty(len(xb), dtype=np.float32)
            for start in range(0, len(xb), _ROW_CHUNK):
                block = xb[start : start + _ROW_CHUNK, :dims]
                norms[start : start + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
            np.maximum(norms, 1e-12, out=norms)
            return norms

        return self._cached(("norms", dims), make)

    # ---- mutation ----

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """labels (N,) int64, new; vectors (N, 512) float32 unit rows."""
        if len(labels) == 0:
            return
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index64.add_with_ids(truncate(vectors, SHORTLIST_DIM), labels)
        self.index512.add_with_ids(vectors, labels)
        self._touch()

    def remove(self, labels: np.ndarray) -> None:
        """Drop labels (flat) or tombstone them (hnsw, compacting when too many)."""
        if len(labels) == 0:
            return
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if self.config.kind == "flat":
            self.index64.remove_ids(labels)
            self.index512.remove_ids(labels)
        else:
            self._tombstones.update(int(x) for x in labels)
            total = int(self.index512.ntotal)
            if len(self._tombstones) > self.config.hnsw_max_tombstone_fraction * total:
                self.compact()
        self._touch()

    def compact(self) -> None:
        """Rebuild the HNSW graphs without the tombstoned vectors."""
        live = self.live_labels()
        vectors = self.vectors(live) if len(live) else np.empty((0, EMBED_DIM), np.float32)
        self.index64 = self._new_index(SHORTLIST_DIM)
        self.index512 = self._new_index(EMBED_DIM)
        self._tombstones = set()
        self._touch()
        self.add(live, vectors)

    def reserve(self, rows: int) -> None:
        """Room for `rows` more vectors in the flat arrays without reallocating.

        A loaded index's arrays are exactly full, so the first add after a restart copied
        all of them to grow (0.43 s at 400k items); after this it takes 2 ms. Costs that
        copy once, now, and `rows` zeroed rows of memory.
        """
        for index in (self.index64, self.index512):
            base = faiss.downcast_index(index.index)
            if self.config.kind == "hnsw":
                base = faiss.downcast_index(base.storage)
            codes = base.codes
            size = codes.size()
            codes.resize(size + rows * base.code_size)
            codes.resize(size)
        self._touch()

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Full vectors (N, 512) float32 of stored labels."""
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        return self.index512.reconstruct_batch(labels)

    # ---- search ----

    def search(
        self,
        queries: np.ndarray,
        *,
        k: int,
        dims: int,
        adaptive: bool,
        allowed: LabelFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine at `dims`.

        queries: (Q, 512) float32 unit rows. allowed: the labels a filter admits, or None.
        Returns (scores (Q, k) float32, labels (Q, k) int64), padded with -inf / -1.
        """
        if allowed is not None and len(allowed) <= self.config.filter_exact_threshold:
            return self._score_subset(queries, allowed.labels, k, dims)
        if adaptive and dims > SHORTLIST_DIM:
            shortlist = max(k * self.config.adaptive_factor, self.config.adaptive_min_shortlist)
            scores, labels = self._rerank(queries, k, dims, allowed, shortlist)
        elif dims == SHORTLIST_DIM and self._fp16_shortlist:
            # fp16 codes rank; a small over-fetch re-scored in float32 gives exact scores
            scores, labels = self._rerank(queries, k, dims, allowed, k + max(k, 16))
        elif dims in (SHORTLIST_DIM, EMBED_DIM):
            index = self.index64 if dims == SHORTLIST_DIM else self.index512
            scores, labels = self._faiss_search(index, truncate(queries, dims), k, allowed)
        else:
            scores, labels = self._scan_prefix(queries, k, dims, allowed)
        available = self.live_count if allowed is None else len(allowed)
        if (labels[:, : min(k, available)] < 0).any():
            # an approximate graph can miss results under a selective filter or many
            # tombstones: fall back to exact scoring of what the filter admits
            pool = self.live_labels() if allowed is None else allowed.labels
            return self._score_subset(queries, pool, k, dims)
        return scores, labels

    def _selector(self, allowed: LabelFilter | None) -> faiss.IDSelector | None:
        if allowed is not None:
            return allowed.selector
        if self._tombstones:
            return faiss.IDSelectorNot(faiss.IDSelectorBatch(self._tombstone_array()))
        return None

    def _faiss_search(
        self, index: faiss.IndexIDMap2, queries: np.ndarray, k: int, allowed: LabelFilter | None
    ) -> tuple[np.ndarray, np.ndarray]:
        # a fresh params object per call: IndexIDMap swaps its selector in place while searching
        selector = self._selector(allowed)
        if self.config.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.hnsw_ef_search, k))
            if selector is not None:
                params.sel = selector
        else:
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
        scores, labels = index.search(queries, k, params=params)
        return scores, labels

    def _rerank(
        self,
        queries: np.ndarray,
        k: int,
        dims: int,
        allowed: LabelFilter | None,
        shortlist: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The 64-d index's top `shortlist`, re-ranked by float32 cosine at `dims`."""
        shortlist = max(k, min(shortlist, max(self.live_count, 1)))
        _, candidates = self._faiss_search(
            self.index64, truncate(queries, SHORTLIST_DIM), shortlist, allowed
        )
        valid = candidates >= 0
        if not valid.any():
            return _empty(len(queries), k)
        # pad slots (-1) read any real vector, then score -inf
        full = self.vectors(np.where(valid, candidates, candidates[valid][0]).reshape(-1))
        cand = truncate(full, dims).reshape(len(queries), shortlist, dims)  # (Q, S, dims)
        scores = np.einsum("qsd,qd->qs", cand, truncate(queries, dims))  # (Q, S)
        scores[~valid] = -np.inf
        return _top_k(scores, candidates, k)

    def _scan_prefix(
        self, queries: np.ndarray, k: int, dims: int, allowed: LabelFilter | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine at a prefix the indexes do not hold (128, 256): scan the storage."""
        xb = self._storage()
        if len(xb) == 0:
            return _empty(len(queries), k)
        ids = self._id_map()
        norms = self._prefix_norms(dims)
        keep: np.ndarray | None = None
        if allowed is not None:
            keep = np.isin(ids, allowed.labels)
        elif self._tombstones:
            keep = ~np.isin(ids, self._tombstone_array())
        q = truncate(queries, dims)  # (Q, dims)
        best_scores, best_labels = _empty(len(queries), k)
        for start in range(0, len(xb), _ROW_CHUNK):
            stop = min(start + _ROW_CHUNK, len(xb))
            scores = (q @ xb[start:stop, :dims].T) / norms[start:stop]  # (Q, chunk)
            if keep is not None:
                scores[:, ~keep[start:stop]] = -np.inf
            labels = np.broadcast_to(ids[start:stop], scores.shape)
            best_scores, best_labels = _top_k(
                np.concatenate([best_scores, scores], axis=1),
                np.concatenate([best_labels, labels], axis=1),
                k,
            )
        return best_scores, best_labels

    def _score_subset(
        self, queries: np.ndarray, labels: np.ndarray, k: int, dims: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine at `dims` against the given labels only."""
        if len(labels) == 0:
            return _empty(len(queries), k)
        q = truncate(queries, dims)
        best_scores, best_labels = _empty(len(queries), k)
        for start in range(0, len(labels), _ROW_CHUNK):
            chunk = np.ascontiguousarray(labels[start : start + _ROW_CHUNK], dtype=np.int64)
            scores = q @ truncate(self.vectors(chunk), dims).T  # (Q, chunk)
            best_scores, best_labels = _top_k(
                np.concatenate([best_scores, scores], axis=1),
                np.concatenate([best_labels, np.broadcast_to(chunk, scores.shape)], axis=1),
                k,
            )
        return best_scores, best_labels

    # ---- persistence ----

    def save(self, directory: Path, generation: int) -> None:
        """Write both indexes and then the manifest naming them, each atomically.

        The manifest is written last, so a crash leaves the previous manifest and
        its files intact; unreferenced index files are removed afterwards.
        """
        live = Capture(
            generation, int(self.index512.ntotal), self._tombstone_array(), self._by_dims()
        )
        self.write_capture(directory, live)

    def _by_dims(self) -> dict[int, faiss.Index]:
        return {SHORTLIST_DIM: self.index64, EMBED_DIM: self.index512}

    def capture(self, generation: int) -> Capture:
        """Copies of both indexes, with what their manifest records: about half the time
        of writing them (0.05 s against 0.11 for 30k HNSW items) and none of the disk's
        latency, so the store's lock is held for less; the copies are as large as the
        indexes while they live."""
        copies = {dims: faiss.clone_index(index) for dims, index in self._by_dims().items()}
        tombstones = self._tombstone_array().copy()
        return Capture(generation, int(self.index512.ntotal), tombstones, copies)

    def write_capture(self, directory: Path, capture: Capture) -> None:
        """Write the indexes of ``capture`` (copies, or :meth:`save`'s live ones) as a
        snapshot; no lock is needed for copies."""
        directory = Path(directory)
        tag = f"{capture.generation}-{uuid.uuid4().hex[:8]}"
        files: dict[str, dict[str, Any]] = {}
        for dims, index in capture.indexes.items():
            name = f"index{dims}-{tag}.faiss"
            path = directory / name
            crc = atomic_write_with(path, lambda tmp, index=index: _write_index(index, tmp))
            files[str(dims)] = {"name": name, "size": path.stat().st_size, "crc32": crc}
        manifest = {
            "format": FORMAT_VERSION,
            "kind": self.config.kind,
            "hnsw_m": self.config.hnsw_m,
            "shortlist_codec": self.config.shortlist_codec,
            "generation": capture.generation,
            "ntotal": capture.ntotal,
            "tombstones": capture.tombstones.tolist(),
            "files": files,
        }
        atomic_write_bytes(directory / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        # drop superseded snapshots and temp files an interrupted save left behind
        keep = {entry["name"] for entry in files.values()}
        for path in [*directory.glob("index*.faiss*"), *directory.glob(f"{MANIFEST_NAME}.*")]:
            if path.name not in keep and (
                path.suffix == ".faiss" or path.name.endswith(TMP_SUFFIX)
            ):
                path.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path, config: IndexConfig) -> tuple[MatryoshkaIndexes, Snapshot]:
        """Read a snapshot; raise IndexFileError if it is missing, corrupt or mismatched."""
        directory = Path(directory)
        try:
            manifest = json.loads((directory / MANIFEST_NAME).read_text())
        except FileNotFoundError:
            raise IndexFileError("no FAISS snapshot") from None
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"unreadable manifest: {exc}") from exc
        try:
            if manifest["format"] != FORMAT_VERSION:
                raise IndexFileError(f"manifest format {manifest['format']}")
            if (
                manifest["kind"] != config.kind
                or (config.kind == "hnsw" and manifest["hnsw_m"] != config.hnsw_m)
                or (config.kind == "flat" and manifest["shortlist_codec"] != config.shortlist_codec)
            ):
                raise IndexFileError(
                    f"snapshot kind {manifest['kind']} (M={manifest['hnsw_m']}, 64-d codec "
                    f"{manifest['shortlist_codec']}) does not match the configured "
                    f"{config.kind} (M={config.hnsw_m}, 64-d codec {config.shortlist_codec})"
                )
            self = cls(config)
            for dims in (SHORTLIST_DIM, EMBED_DIM):
                entry = manifest["files"][str(dims)]
                path = directory / entry["name"]
                if not path.is_file():
                    raise IndexFileError(f"{path.name} is missing")
                if path.stat().st_size != entry["size"]:
                    raise IndexFileError(f"{path.name} has the wrong size")
                if config.verify_checksums and file_crc32(path) != entry["crc32"]:
                    raise IndexFileError(f"{path.name} fails its checksum")
                try:
                    index = faiss.read_index(str(path))
                except RuntimeError as exc:
                    raise IndexFileError(f"{path.name} is unreadable: {exc}") from exc
                if index.d != dims or index.metric_type != faiss.METRIC_INNER_PRODUCT:
                    raise IndexFileError(f"{path.name} is not a {dims}-d inner-product index")
                # read_index returns the concrete class; a downcast wrapper would not own it
                if not isinstance(index, faiss.IndexIDMap2):
                    raise IndexFileError(f"{path.name} is not an IndexIDMap2")
                setattr(self, f"index{dims}", index)
            ids64 = faiss.vector_to_array(self.index64.id_map)
            if self.index512.ntotal != manifest["ntotal"] or not np.array_equal(
                ids64, self.stored_labels()
            ):
                raise IndexFileError("the 64-d and 512-d indexes disagree")
            self._tombstones = {int(label) for label in manifest["tombstones"]}
            snapshot = Snapshot(generation=int(manifest["generation"]), ntotal=manifest["ntotal"])
        except (KeyError, TypeError) as exc:
            raise IndexFileError(f"malformed manifest: {exc}") from exc
        self.reserve(max(int(self.index512.ntotal) // RESERVE_FRACTION, RESERVE_MIN_ROWS))
        return self, snapshot


def _write_index(index: faiss.Index, path: Path) -> int:
    """`faiss.write_index`, flushed to disk every `SYNC_BYTES` as it goes; returns its CRC32.

    Written at once, a 1 GB index left that much dirty data for one final fsync, and
    the SQLite commits (each an fsync of its own) of writes running meanwhile waited
    behind it; in steps, each of theirs waits for at most one step's worth. The CRC is
    taken as the bytes go by, so the file is not read back.
    """
    crc = 0
    with open(path, "wb") as handle:
        pending = 0

        def write(chunk: bytes) -> None:
            nonlocal crc, pending
            crc = zlib.crc32(chunk, crc)
            handle.write(chunk)
            pending += len(chunk)
            if pending >= SYNC_BYTES:
                handle.flush()
                os.fdatasync(handle.fileno())
                pending = 0

        faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    return crc


def _empty(queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.full((queries, k), -np.inf, dtype=np.float32),
        np.full((queries, k), -1, dtype=np.int64),
    )


def _top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k columns per row, sorted by descending score: (Q, N) -> (Q, k), padded."""
    queries, n = scores.shape
    if n < k:
        pad_s, pad_l = _empty(queries, k - n)
        scores = np.concatenate([scores, pad_s], axis=1)
        labels = np.concatenate([labels, pad_l], axis=1)
        n = k
    if n > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        labels = np.take_along_axis(labels, part, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    labels = np.take_along_axis(labels, order, axis=1)
    labels = np.where(np.isfinite(scores), labels, -1)
    return scores, labels
