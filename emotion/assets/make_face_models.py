"""Rebuild the BlazeFace short-range detector file in this folder from the npm package `@mediapipe/face_detection`
(its full-range model is not shipped since YuNet finds small and far faces: issue #36).

The npm package ships the raw BlazeFace `.tflite` models without TFLite metadata; the MediaPipe Tasks
`FaceDetector` refuses a model that does not declare its input normalisation, so we add that metadata here
(image input normalised with mean 127.5 / std 127.5, i.e. to [-1, 1], plus the two raw feature outputs:
box regressors and scores). Nothing in the weights changes.

Usage:
    npm pack @mediapipe/face_detection@0.4.1657300184 && tar xzf mediapipe-face_detection-*.tgz
    python emotion/assets/make_face_models.py package/
"""
from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {
    "face_detection_short_range.tflite": "BlazeFace short range (128x128): faces within ~2 m of the camera.",
}
# "1.0.0" is what TFLite's own version calculator returns for metadata that uses only image normalisation
# and plain feature tensors (no tokenizers, no score calibration, no associated files).
MIN_PARSER_VERSION = "1.0.0"


def _stub_metadata_version_module() -> None:
    """mediapipe 1.x wheels import `_pywrap_metadata_version` in metadata.py but do not ship it.

    It only computes the minimum metadata-parser version, which is fixed for the features we use, so a stub
    that answers that constant is enough. It must be in sys.modules before metadata.py is imported.
    """
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    stub = types.ModuleType(name)
    stub.GetMinimumMetadataParserVersion = lambda _buf: MIN_PARSER_VERSION
    for parent in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
        sys.modules.setdefault(parent, types.ModuleType(parent))
    sys.modules[name] = stub
    sys.modules["mediapipe.tasks.cc.metadata.python"]._pywrap_metadata_version = stub


def add_metadata(model: bytes, name: str, description: str) -> bytes:
    """Returns `model` with TFLite metadata: normalised RGB image input and two feature outputs."""
    _stub_metadata_version_module()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, description)
    writer.add_image_input(norm_mean=[127.5], norm_std=[127.5])
    writer.add_feature_output(name="regressors", description="box and 6 keypoint offsets per anchor")
    writer.add_feature_output(name="classificators", description="face score logit per anchor")
    tflite, _json = writer.populate()
    del writer  # its __del__ cleans a temp dir; at interpreter exit `os.path` may already be gone
    return bytes(tflite)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("package_dir", type=Path, help="the unpacked npm tarball's package/ folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the models (default: this folder)")
    args = parser.parse_args()
    for filename, description in MODELS.items():
        src = args.package_dir / filename
        if not src.is_file():
            sys.exit(f"{src} not found: pass the folder of the unpacked @mediapipe/face_detection npm tarball")
        out = add_metadata(src.read_bytes(), Path(filename).stem, description)
        (args.out / filename).write_bytes(out)
        print(f"wrote {args.out / filename} ({len(out)} bytes, from {len(src.read_bytes())})")


if __name__ == "__main__":
    main()
