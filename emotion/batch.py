"""Batch prediction over a data set: every face of every image -> parquet shards, resumable.

`predict_rows` is the one per-batch function: the single-machine runner below (1 or N processes) and the Ray Data
path (`emotion.batch_ray`) both call it, so they write the same rows. One row per face; an image without a face
gives one row with a null `face_index`; an image that cannot be read gives one row with its `error`.

Shards are `part-NNNNNN.parquet`, each the results of `shard_size` consecutive images of the source, written to a
temporary name and renamed, so a file that exists is complete. A rerun with the same options skips the shards that
exist (`_manifest.json` records the options, and a rerun with other options is refused rather than mixed in).
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_write
from .errors import EmotionError
from .faces import DEFAULT_MAX_FACES, DEFAULT_MIN_SCORE, DEFAULT_RANGE
from .labels import LABELS
from .records import dataset_error_row, dataset_rows, dataset_schema

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
SHARD_NAME = "part-{:06d}.parquet"
MAX_PIXELS_IN_FLIGHT = 64_000_000  # decoded pixels held before their faces are classified: bounds memory per batch


def schema(labels: Sequence[str] = LABELS, action_units: bool = False) -> pa.Schema:
    """The columns of every shard (`records.dataset_schema`): where each face is, its 8 probabilities, the top
    emotion, with `action_units` its AUs (au_1, au_2, ...) and their reason, and any error."""
    return dataset_schema(labels, action_units)


def _error_row(image_id: str, e: Exception) -> dict:
    return dataset_error_row(image_id, str(e) if isinstance(e, EmotionError) else f"{type(e).__name__}: {e}")


def predict_rows(predictor, records: Iterable[tuple[str, object]], action_units: bool = False) -> pa.Table:
    """The per-batch function: (image id, payload) pairs -> one table row per face, in the order given.

    A payload is anything `load_image` takes, or an exception to record as that image's error. No image can stop
    the batch: whatever goes wrong decoding or detecting is that image's `error`. `action_units` adds each face's
    AUs (columns au_1, ..., action_units_reason).
    """
    rows: list[list[dict]] = []
    pending: list[tuple[int, str, object]] = []  # (slot, id, (image, faces)) awaiting classification
    pixels = 0
    for image_id, payload in records:
        rows.append([])
        try:
            if isinstance(payload, Exception):
                raise payload
            img, faces = predictor.detect(payload)
        except Exception as e:  # noqa: BLE001 - a bad image is recorded, never fatal
            rows[-1] = [_error_row(image_id, e)]
            continue
        pending.append((len(rows) - 1, image_id, (img, faces)))
        pixels += img.width * img.height
        if pixels > MAX_PIXELS_IN_FLIGHT:
            _classify(predictor, pending, rows, action_units)
            pending, pixels = [], 0
    _classify(predictor, pending, rows, action_units)
    return pa.Table.from_pylist([r for image in rows for r in image], schema=schema(predictor.labels, action_units))


def _classify(predictor, pending: list, rows: list[list[dict]], action_units: bool = False) -> None:
    if not pending:
        return
    try:
        results = predictor.classify_detected([p[2] for p in pending], action_units=action_units)
    except Exception as e:  # noqa: BLE001 - find the image that breaks the batch, keep the others
        if len(pending) == 1:
            rows[pending[0][0]] = [_error_row(pending[0][1], e)]
        else:
            for item in pending:
                _classify(predictor, [item], rows, action_units)
        return
    for (slot, image_id, _), result in zip(pending, results):
        rows[slot] = dataset_rows(image_id, result)


# ------------------------------------------------------------------------------------------------------ the runner
@dataclass
class Options:
    """What the predictor is built from; recorded in the manifest so a resumed run uses the same."""

    model: str | None = None
    min_score: float = DEFAULT_MIN_SCORE
    max_faces: int = DEFAULT_MAX_FACES
    range: str = DEFAULT_RANGE
    threads: int | None = None  # classifier threads per process (None: all cores in 1 process, 1 each in N)
    action_units: bool = False  # also each face's AUs (columns au_1, ..., action_units_reason)

    def manifest(self) -> dict:
        """What a resumed run must share: all but the threads; action_units only when on, so a folder written
        before the option existed still resumes."""
        return {k: v for k, v in asdict(self).items() if k != "threads" and (k != "action_units" or v)}

    def predictor(self):
        from .predict import Predictor

        if self.threads:
            from .threads import set_threads

            set_threads(self.threads)
        return Predictor.from_pretrained(self.model, min_score=self.min_score, max_faces=self.max_faces,
                                         range=self.range)


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    errors: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        return (f"predicted {self.images} images ({self.faces} faces, {self.errors} errors) in {self.seconds:.1f} s: "
                f"{rate:.1f} images/s; {self.shards_written} shards written, {self.shards_skipped} already there")


def batches(records: Iterable, shard_size: int, batch_size: int) -> Iterator[tuple[int, list]]:
    """(shard, records) chunks of at most batch_size that never straddle a shard; None records (done) are dropped."""
    current, shard = [], -1
    for i, record in enumerate(records):
        if record is None:
            continue
        if current and (i // shard_size != shard or len(current) == batch_size):
            yield shard, current
            current = []
        shard = i // shard_size
        current.append(record)
    if current:
        yield shard, current


def check_manifest(output: Path, manifest: dict) -> None:
    """Writes the run's options on the first run; refuses to resume into a folder written with other options.

    A manifest without any shard (a run that failed before its first one, e.g. on a bad --model) is replaced.
    """
    path = output / MANIFEST
    if path.is_file() and any(output.glob("part-*.parquet")):
        old = json.loads(path.read_text())
        if old != manifest:
            diff = ", ".join(f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in manifest.items() if old.get(k) != v)
            raise EmotionError(f"'{output}' holds results of another run ({diff}): pass a new --output, or the "
                               "same options to resume")
        return
    if not path.is_file() and any(output.glob("*.parquet")):
        raise EmotionError(f"'{output}' already holds parquet files not written by predict-dataset: pass an empty "
                           "or new --output folder")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))


def run(source, output: Path, options: Options, *, workers: int = 1, shard_size: int = 1000,
        batch_size: int = 32, progress: bool = True) -> Summary:
    """Predicts every image of `source` (see `batch_sources.open_source`) into parquet shards under `output`."""
    from .predict import default_source

    if workers < 1 or shard_size < 1 or batch_size < 1:
        raise EmotionError("--workers, --shard-size and --batch-size must be whole numbers >= 1")
    output.mkdir(parents=True, exist_ok=True)
    options = Options(**{**asdict(options), "model": options.model or default_source()})
    check_manifest(output, {"source": source.describe(), "shard_size": shard_size, **options.manifest()})
    for tmp in output.glob("*.tmp"):
        tmp.unlink()  # left by a run that was killed mid-write
    done = {int(p.stem.split("-")[1]) for p in output.glob("part-*.parquet")}
    summary = Summary(shards_skipped=len(done))
    bar = _progress_bar(source.total, done, shard_size, progress)
    t0 = time.perf_counter()
    chunks = batches(source.records(lambda i: i // shard_size in done), shard_size, batch_size)
    shard, tables = None, []
    for k, table in _predict_chunks(chunks, options, workers):
        if shard is not None and k != shard:
            _write_shard(output, shard, tables, summary)
            tables = []
        shard = k
        tables.append(table)
        n = _count_images(table)
        summary.images += n
        bar.update(n)
    if tables:
        _write_shard(output, shard, tables, summary)
    bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _count_images(table: pa.Table) -> int:
    """Rows of one image are consecutive and the first has face_index 0 or null."""
    idx = table.column("face_index").to_pylist()
    return sum(1 for i in idx if not i)


def _write_shard(output: Path, shard: int, tables: list[pa.Table], summary: Summary) -> None:
    table = pa.concat_tables(tables)
    path = output / SHARD_NAME.format(shard)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    summary.shards_written += 1
    summary.files.append(path.name)
    summary.faces += len(table.column("face_index").drop_null())
    summary.errors += len(table.column("error").drop_null())


def _progress_bar(total: int | None, done: set[int], shard_size: int, enabled: bool):
    from .progress import progress

    initial = sum(min(shard_size, total - k * shard_size) for k in done) if total else 0
    return progress(total=total, initial=initial, desc="predicting", unit="img", disable=not enabled)


# ---------------------------------------------------------------------------------------- 1 process or N processes
_worker_predictor = None
_worker_options = Options()


def _init_worker(options: Options) -> None:
    global _worker_predictor, _worker_options
    _worker_predictor, _worker_options = options.predictor(), options


def _work(records: list) -> pa.Table:
    return predict_rows(_worker_predictor, records, _worker_options.action_units)


def _predict_chunks(chunks: Iterator[tuple[int, list]], options: Options,
                    workers: int) -> Iterator[tuple[int, pa.Table]]:
    """(shard, table) per chunk, in order. N workers each hold one Predictor; at most 2N chunks are in flight, so
    memory stays bounded however large the source is."""
    if workers == 1:
        predictor = options.predictor()
        for shard, records in chunks:
            yield shard, predict_rows(predictor, records, options.action_units)
        return
    options = Options(**{**asdict(options), "threads": options.threads or 1})
    # spawn, not fork: MediaPipe and torch's thread pools do not survive a fork of a process that started them.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(options,)) as pool:
        window = []
        for shard, records in chunks:
            window.append((shard, pool.submit(_work, records)))
            if len(window) >= 2 * workers:
                s, fut = window.pop(0)
                yield s, fut.result()
        for s, fut in window:
            yield s, fut.result()
