"""`python -m emotion predict-dataset`: every face of a data set into parquet shards, resumable, bad images recorded."""
from __future__ import annotations

import gc
import io

import pandas.testing
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from emotion.__main__ import main
from emotion.batch import Options, batches, run
from emotion.batch_sources import HubSource, open_source
from emotion.labels import LABELS


@pytest.fixture(scope="module")
def photos(astronaut, tmp_path_factory):
    """Four files: one face, no face (in a subfolder), a broken JPEG, and two faces side by side."""
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(root / "astronaut.png")
    (root / "sub").mkdir()
    Image.new("RGB", (64, 64), "gray").save(root / "sub" / "blank.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    pair = Image.new("RGB", (1024, 512))
    pair.paste(Image.fromarray(astronaut), (0, 0))
    pair.paste(Image.fromarray(astronaut), (512, 0))
    pair.save(root / "pair.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def parquet_dir(photos, tmp_path_factory):
    """The same photos as rows of a `datasets`-style parquet file ({bytes, path} structs), plus an empty row."""
    root = tmp_path_factory.mktemp("parquet")
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    images = [{"bytes": f.read_bytes(), "path": f.name} for f in files] + [{"bytes": None, "path": "empty.png"}]
    pq.write_table(pa.table({"image": images, "key": [f"k{i}" for i in range(len(images))]}), root / "a.parquet")
    return root


def read(folder):
    return pq.read_table(folder).to_pandas().sort_values(["image_id", "face_index"]).reset_index(drop=True)


def assert_same_rows(a, b, columns=None):
    """Same images, faces, boxes and labels; probabilities equal to float32 rounding (the forward pass's batch
    size differs between the paths, and the kernels it picks with it)."""
    columns = columns or list(a.columns)
    pandas.testing.assert_frame_equal(a[columns], b[columns], check_exact=False, rtol=1e-4, atol=1e-6)


def test_folder_gives_one_row_per_face_and_records_bad_images(photos, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict-dataset", str(photos), "--output", str(out), "--model", f"local-dir:{tiny_model}"]) == 0
    df = read(out)
    assert list(df.image_id) == ["astronaut.png", "broken.jpg", "pair.jpg", "pair.jpg", "sub/blank.jpg"]
    assert df.face_index.tolist()[2:4] == [0, 1] and df.num_faces.tolist()[2] == 2
    face = df.iloc[0]
    assert abs(face.box_x - 178) < 15 and abs(face.box_y - 80) < 20  # the astronaut's face
    probs = df[[f"prob_{label}" for label in LABELS]].iloc[[0, 2, 3]]
    assert probs.sum(axis=1).round(4).tolist() == [1.0, 1.0, 1.0]
    assert face.emotion == LABELS[int(probs.iloc[0].to_numpy().argmax())]
    assert "could not read an image" in df.error[1] and df.face_index.isna()[1]
    assert df.error.isna()[4] and df.num_faces[4] == 0 and df.face_index.isna()[4]  # no face: a row, no error
    err = capsys.readouterr().err
    assert "predicted 4 images (3 faces, 1 errors)" in err and "images/s" in err


def test_rerun_skips_written_shards_and_redoes_a_missing_one(photos, tiny_model, tmp_path):
    out, options = tmp_path / "out", Options(f"local-dir:{tiny_model}")
    first = run(open_source(str(photos)), out, options, shard_size=1, progress=False)
    assert (first.shards_written, first.shards_skipped, first.images) == (4, 0, 4)
    before = read(out)
    (out / "part-000002.parquet").unlink()
    (out / "part-000003.parquet.tmp").write_bytes(b"half a file from a killed run")
    again = run(open_source(str(photos)), out, options, shard_size=1, progress=False)
    assert (again.shards_written, again.shards_skipped, again.images) == (1, 3, 1)
    assert again.files == ["part-000002.parquet"]
    assert not list(out.glob("*.tmp"))
    assert read(out).equals(before)


def test_rerun_with_other_options_is_refused(photos, tiny_model, tmp_path, capsys):
    out, model = str(tmp_path / "out"), f"local-dir:{tiny_model}"
    assert main(["predict-dataset", str(photos), "--output", out, "--model", model, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["predict-dataset", str(photos), "--output", out, "--model", model, "--min-score", "0.8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "min_score" in err[0] and "--output" in err[0]


@pytest.mark.parametrize("source", ["missing/folder/x", "a/b/c", "notes.txt"])
def test_bad_source_is_one_line_and_exit_2(source, tiny_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["predict-dataset", source, "--output", "out", "--model", f"local-dir:{tiny_model}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_parquet_rows_match_the_folder_and_record_a_row_without_bytes(photos, parquet_dir, tiny_model, tmp_path):
    model = f"local-dir:{tiny_model}"
    run(open_source(str(photos)), tmp_path / "f", Options(model), progress=False)
    run(open_source(str(parquet_dir)), tmp_path / "p", Options(model), shard_size=2, progress=False)
    folder, table = read(tmp_path / "f"), read(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").glob("part-*")) == [f"part-00000{i}.parquet" for i in range(3)]
    assert "no encoded image bytes" in table.set_index("image_id").error["empty.png"]
    table = table[table.image_id != "empty.png"].reset_index(drop=True)
    folder["image_id"] = folder.image_id.str.split("/").str[-1].astype(table.image_id.dtype)
    folder = folder.sort_values(["image_id", "face_index"]).reset_index(drop=True)
    # an error names the file on one path and "the given bytes" on the other
    same = [c for c in folder.columns if c != "error"]
    assert_same_rows(table, folder, same)


def test_id_column_names_the_rows(parquet_dir, tiny_model, tmp_path):
    source = open_source(str(parquet_dir), id_column="key")
    run(source, tmp_path / "o", Options(f"local-dir:{tiny_model}"), progress=False)
    assert sorted(set(read(tmp_path / "o").image_id)) == [f"k{i}" for i in range(5)]


def test_streamed_datasets_source_gives_the_same_rows(parquet_dir, tiny_model, tmp_path):
    """HubSource streams through `datasets.load_dataset(..., streaming=True)`: a local folder takes the same path
    as a Hub id, offline."""
    model = Options(f"local-dir:{tiny_model}")
    run(open_source(str(parquet_dir)), tmp_path / "p", model, progress=False)
    run(HubSource(str(parquet_dir)), tmp_path / "h", model, progress=False)
    assert_same_rows(read(tmp_path / "h"), read(tmp_path / "p"))


def test_hub_id_that_cannot_be_reached_is_a_clear_error(tiny_model, tmp_path, capsys):
    assert main(["predict-dataset", "no-such-org/no-such-data", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no-such-org/no-such-data" in err and "--split" in err and len(err.strip().splitlines()) == 1


def test_batches_never_straddle_a_shard_and_drop_finished_records():
    records = [None, None, "c", "d", "e", "f", "g"]  # the first two belong to a finished shard
    assert list(batches(records, shard_size=3, batch_size=2)) == [(0, ["c"]), (1, ["d", "e"]), (1, ["f"]),
                                                                  (2, ["g"])]


def test_two_processes_give_the_same_rows_as_one(photos, tiny_model, tmp_path):
    model = Options(f"local-dir:{tiny_model}")
    run(open_source(str(photos)), tmp_path / "one", model, batch_size=1, progress=False)
    summary = run(open_source(str(photos)), tmp_path / "two", model, workers=2, batch_size=1, progress=False)
    assert summary.images == 4
    assert_same_rows(read(tmp_path / "two"), read(tmp_path / "one"))


def test_ray_data_gives_the_same_rows_as_one_machine(photos, parquet_dir, tiny_model, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")
    from emotion.batch_ray import run_ray

    model = Options(f"local-dir:{tiny_model}")
    # Ray forks its processes and runs Python in the child before exec: garbage from earlier tests collected there
    # runs its finalizers without the parent's threads (a converted video frame once hung a full run so; see
    # emotion.video.frame_image). Collect it here, in this process.
    gc.collect()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # Ray gives its own processes 30 s to start; an overloaded machine misses that
        if "timed out during startup" not in str(e):
            raise
        pytest.skip(f"Ray could not start on this overloaded machine: {e}")
    try:
        for name, src in (("images", photos), ("parquet", parquet_dir)):
            run(open_source(str(src)), tmp_path / f"{name}-1", model, progress=False)
            summary = run_ray(open_source(str(src)), tmp_path / f"{name}-ray", model, batch_size=2)
            one, on_ray = read(tmp_path / f"{name}-1"), read(tmp_path / f"{name}-ray")
            assert summary.images == len(set(one.image_id))
            same = [c for c in one.columns if c != "error"]
            assert_same_rows(on_ray, one, same)
            assert on_ray.error.isna().equals(one.error.isna())
    finally:
        ray.shutdown()


def test_an_image_that_breaks_classification_is_its_own_error(tiny_model):
    """If classifying a batch fails, each image is retried alone: only the one that fails gets an error."""
    from emotion.batch import predict_rows
    from emotion.predict import Predictor

    predictor = Predictor.from_pretrained(f"local-dir:{tiny_model}")
    real = predictor.classify_detected

    def fussy(loaded, t0=None, action_units=False):
        if any(img.width == 333 for img, _ in loaded):
            raise RuntimeError("boom")
        return real(loaded, t0, action_units)

    predictor.classify_detected = fussy
    buf = io.BytesIO()
    Image.new("RGB", (333, 100), "white").save(buf, "PNG")
    table = predict_rows(predictor, [("ok", Image.new("RGB", (64, 64))), ("bad", buf.getvalue())]).to_pylist()
    assert [r["image_id"] for r in table] == ["ok", "bad"]
    assert table[0]["error"] is None and table[1]["error"] == "RuntimeError: boom"
