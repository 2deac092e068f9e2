"""Where batch prediction reads images from: an image folder, a parquet folder, or a Hub data set (streamed).

Every source yields `(image_id, payload)` pairs in a fixed order, so that a rerun sees the same images in the same
shards and can skip the shards already written. Payloads are what `load_image` takes (a path or encoded bytes);
nothing is decoded here, so a bad image fails later, on its own row, and never stops the run.

Image ids: a file's path relative to the folder; for parquet and Hub rows, the `--id-column` value if one is named,
else the file name a `datasets.Image` column keeps with the bytes, else `sha256:` and the first 16 hex digits of the
bytes (the same on every machine, so the Ray path gives the same ids).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import EmotionError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
Record = tuple[str, Any]  # (image id, payload for load_image, or an EmotionError to record for this row)
# records(skip) yields None in place of each record whose index skip() accepts: the shard it belongs to is done.


def image_files(folder: Path) -> list[Path]:
    """The images under `folder` (recursive, by suffix), sorted, so every run sees the same order."""
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def row_record(row: dict, image_column: str, id_column: str | None) -> Record:
    """One parquet / Hub row -> (id, encoded bytes). Only the bytes are used: a path stored in someone else's data
    set is never opened (it may name any file on this machine)."""
    value = row.get(image_column)
    data = value.get("bytes") if isinstance(value, dict) else value
    if id_column is not None:
        image_id = str(row.get(id_column))
    elif isinstance(value, dict) and value.get("path"):
        image_id = str(value["path"])
    elif isinstance(data, (bytes, bytearray)):
        image_id = "sha256:" + hashlib.sha256(data).hexdigest()[:16]
    else:
        image_id = "missing"
    if not isinstance(data, (bytes, bytearray)) or not data:
        return image_id, EmotionError(f"the row's '{image_column}' holds no encoded image bytes "
                                      f"(it holds {type(data).__name__}): store the image file's bytes")
    return image_id, bytes(data)


def find_image_column(schema, wanted: str | None) -> str:
    """The column holding the images: `wanted` if given, else the one `datasets` marks as Image, else a struct of
    {bytes, path}, else a binary column called image/img/bytes."""
    names = list(schema.names)
    if wanted:
        if wanted not in names:
            raise EmotionError(f"no column '{wanted}' in the data (columns: {', '.join(names)}): fix --image-column")
        return wanted
    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        features = json.loads(meta).get("info", {}).get("features", {})
        for name, feature in features.items():
            if isinstance(feature, dict) and feature.get("_type") == "Image" and name in names:
                return name
    import pyarrow as pa

    for field in schema:
        if pa.types.is_struct(field.type) and {"bytes", "path"} <= {f.name for f in field.type}:
            return field.name
    for name in ("image", "img", "bytes"):
        if name in names and pa.types.is_binary(schema.field(name).type):
            return name
    raise EmotionError(f"found no image column among: {', '.join(names)}; name it with --image-column")


@dataclass
class FolderSource:
    """Every image file under a folder; the id is its path relative to the folder."""

    root: Path

    def __post_init__(self):
        self.files = image_files(self.root)
        if not self.files:
            raise EmotionError(f"no images (or parquet files) found in '{self.root}': pass a folder holding "
                               f"{', '.join(IMAGE_SUFFIXES)} or .parquet files, or a Hub data set id")

    @property
    def total(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return f"images:{self.root.resolve()}"

    def records(self, skip=lambda i: False) -> Iterator[Record | None]:
        for i, f in enumerate(self.files):
            yield None if skip(i) else (f.relative_to(self.root).as_posix(), str(f))


@dataclass
class ParquetSource:
    """Every row of the *.parquet files in a folder (sorted by name), read a record batch at a time."""

    root: Path
    image_column: str | None = None
    id_column: str | None = None
    read_rows: int = 256

    def __post_init__(self):
        import pyarrow.parquet as pq

        self.files = sorted(self.root.rglob("*.parquet"))
        self.counts = [pq.ParquetFile(f).metadata.num_rows for f in self.files]
        schema = pq.read_schema(self.files[0])
        self.image_column = find_image_column(schema, self.image_column)
        if self.id_column and self.id_column not in schema.names:
            raise EmotionError(f"no column '{self.id_column}' in {self.files[0].name}: fix --id-column")

    @property
    def total(self) -> int:
        return sum(self.counts)

    def describe(self) -> str:
        return f"parquet:{self.root.resolve()}"

    def records(self, skip=lambda i: False) -> Iterator[Record | None]:
        import pyarrow.parquet as pq

        columns = [self.image_column] + ([self.id_column] if self.id_column else [])
        start = 0
        for f, n in zip(self.files, self.counts):
            if all(skip(i) for i in range(start, start + n)):  # a finished file is not even opened
                yield from (None for _ in range(n))
                start += n
                continue
            for b in pq.ParquetFile(f).iter_batches(batch_size=self.read_rows, columns=columns):
                for row in b.to_pylist():
                    yield None if skip(start) else row_record(row, self.image_column, self.id_column)
                    start += 1


@dataclass
class HubSource:
    """A Hub data set (or a local folder `datasets` can load), streamed: nothing is downloaded ahead."""

    name: str
    split: str = "train"
    config: str | None = None
    image_column: str | None = None
    id_column: str | None = None

    def __post_init__(self):
        import datasets

        try:
            self.ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as e:  # offline, unknown id, private repo, bad split: all mean "check the id"
            raise EmotionError(f"could not open the data set '{self.name}' (split '{self.split}'): "
                               f"{type(e).__name__}: {e}. Check the id, --split and --config, and the network") from e
        features = self.ds.features or {}
        images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
        structs = [k for k, v in features.items() if isinstance(v, dict) and {"bytes", "path"} <= set(v)]
        self.image_column = self.image_column or next(iter(images + structs), None)
        if self.image_column not in features:
            raise EmotionError(f"found no image column in '{self.name}' (columns: {', '.join(features)}): "
                               "name it with --image-column")
        if isinstance(features[self.image_column], datasets.Image):
            # Undecoded: the bytes come through, and a broken image becomes its row's error instead of a crash.
            self.ds = self.ds.cast_column(self.image_column, datasets.Image(decode=False))
        info = self.ds.info.splits.get(self.split) if self.ds.info and self.ds.info.splits else None
        self._total = info.num_examples if info else None

    @property
    def total(self) -> int | None:
        return self._total

    def describe(self) -> str:
        return f"hub:{self.name}:{self.config or ''}:{self.split}"

    def records(self, skip=lambda i: False) -> Iterator[Record | None]:
        first = 0
        while skip(first):  # the finished prefix is skipped without streaming its rows
            first += 1
        yield from (None for _ in range(first))
        for i, row in enumerate(self.ds.skip(first) if first else self.ds, start=first):
            yield None if skip(i) else row_record(row, self.image_column, self.id_column)


def open_source(source: str, *, split: str = "train", config: str | None = None, image_column: str | None = None,
                id_column: str | None = None):
    """A folder of parquet files, a folder of images, or else a Hub data set id (`org/name` or `hf-hub:org/name`)."""
    path = Path(source)
    if path.is_dir():
        if any(path.rglob("*.parquet")):
            return ParquetSource(path, image_column, id_column)
        return FolderSource(path)
    if path.exists():
        raise EmotionError(f"'{source}' is a file: pass a folder of images or parquet files, or a Hub data set id")
    name = source.removeprefix("hf-hub:")
    if name.count("/") != 1 or name.startswith(("/", ".")):
        raise EmotionError(f"no folder at '{source}', and it is not a Hub data set id (org/name): check the path")
    return HubSource(name, split, config, image_column, id_column)
