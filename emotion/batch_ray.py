"""Batch prediction on Ray Data: the same per-batch function (`batch.predict_rows`) on a cluster.

    read_parquet / read_binary_files -> map_batches(RayPredictor, one model per actor) -> write_parquet

Install with `pip install -r requirements-ray.txt` (or `pip install .[ray]`). Image folders are read as raw bytes
(`read_binary_files`), not with `read_images`: decoding happens in `predict_rows` with `load_image`, so EXIF
rotation, transparency and size limits are exactly the single-machine path's, and a broken file becomes its row's
error instead of failing the read. Ray writes its own file names and has no resume: rerun into a new folder.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .batch import Options, Summary, predict_rows
from .batch_sources import FolderSource, ParquetSource, row_record
from .errors import EmotionError

log = logging.getLogger(__name__)


class RayPredictor:
    """Ray Data's callable class: built once per actor (the model loads once), then called on every batch."""

    def __init__(self, options: Options, kind: str, image_column: str | None = None, id_column: str | None = None,
                 root: str | None = None):
        self.predictor, self.action_units = options.predictor(), options.action_units
        self.kind, self.image_column, self.id_column, self.root = kind, image_column, id_column, root

    def __call__(self, batch):
        """A pyarrow batch of source rows -> the pyarrow table of face rows (`batch.schema()`)."""
        rows = batch.to_pylist()
        if self.kind == "images":
            records = [(_relative(r["path"], self.root), r["bytes"]) for r in rows]
        else:
            records = [row_record(r, self.image_column, self.id_column) for r in rows]
        return predict_rows(self.predictor, records, self.action_units)


def _relative(path: str, root: str) -> str:
    """Ray reports local files without the leading '/'; ids are the path under the folder, as in FolderSource."""
    absolute = path if path.startswith("/") else "/" + path
    return Path(absolute).relative_to(root).as_posix()


def read(source, ray_data):
    """The source as a Ray Dataset and the kwargs RayPredictor needs to turn its rows into records."""
    if isinstance(source, FolderSource):
        files = [str(f.resolve()) for f in source.files]  # the same files, in the same set, as the 1-machine path
        return ray_data.read_binary_files(files, include_paths=True), {"kind": "images",
                                                                        "root": str(source.root.resolve())}
    if isinstance(source, ParquetSource):
        columns = [source.image_column] + ([source.id_column] if source.id_column else [])
        ds = ray_data.read_parquet([str(f.resolve()) for f in source.files], columns=columns)
        return ds, {"kind": "parquet", "image_column": source.image_column, "id_column": source.id_column}
    raise EmotionError("--ray reads image folders and parquet folders; for a Hub data set, run without --ray, or "
                       "point --ray at the data set's parquet files")


def run_ray(source, output: Path, options: Options, *, address: str = "local", workers: int = 1,
            batch_size: int = 32) -> Summary:
    """Predicts `source` on Ray Data with `workers` actors and writes Ray's parquet files under `output`.

    `address` "local" starts a Ray on this machine (as many CPUs as workers + 1); anything else is passed to
    `ray.init` ("auto" joins the cluster this machine belongs to, "ray://host:10001" a remote one).
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise EmotionError("--ray needs Ray Data: pip install -r requirements-ray.txt") from None
    from .predict import default_source

    if output.exists() and any(output.iterdir()):
        raise EmotionError(f"'{output}' is not empty: Ray writes a fresh folder, so pass a new --output")
    options = Options(**{**options.__dict__, "model": options.model or default_source(),
                         "threads": options.threads or 1})
    started = not ray.is_initialized()
    if started:
        # An actor per worker and a core for reading: no more, so Ray does not compete with the actors.
        try:
            ray.init(**({"num_cpus": workers + 1} if address == "local" else {"address": address}),
                     include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as e:  # Ray raises plain Exception / ConnectionError for "could not start or connect"
            raise EmotionError(f"Ray did not start ({type(e).__name__}: {e}): check --ray's address, or that this "
                               "machine is not overloaded (Ray waits 30 s for its own processes)") from e
    try:
        t0 = time.perf_counter()
        ds, kwargs = read(source, ray.data)
        ds = ds.map_batches(RayPredictor, fn_constructor_args=(options,), fn_constructor_kwargs=kwargs,
                            batch_format="pyarrow", batch_size=batch_size, concurrency=workers, num_cpus=1)
        ds.write_parquet(str(output.resolve()))
        return _summary(output, time.perf_counter() - t0)
    finally:
        if started:
            ray.shutdown()


def _summary(output: Path, seconds: float) -> Summary:
    import pyarrow.parquet as pq

    files = sorted(p.name for p in output.glob("*.parquet"))
    table = pq.read_table(output, columns=["image_id", "face_index", "error"]) if files else None
    if table is None:
        return Summary(seconds=seconds)
    ids = table.column("face_index").to_pylist()
    return Summary(images=sum(1 for i in ids if not i), faces=len(table.column("face_index").drop_null()),
                   errors=len(table.column("error").drop_null()), shards_written=len(files), seconds=seconds,
                   files=files)

