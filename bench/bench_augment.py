"""Each augmentation family's effect, measured once: short fine-tunes that leave one family out, scored on the posed
validation split (and FER+ validation), against the run with every family.

    python bench/bench_augment.py [--config trainer/configs/small_cnn_mixed.yaml] [--init local-dir:DIR]
        [--epochs 2] [--max-train-samples 3000] [--max-val-samples 1000] [--out runs/bench_augment]

--init should be a model that has not seen the posed faces (e.g. the FER+-only small_cnn from git history): starting
from one already trained on them with every family mutes the differences.

Each run resumes if interrupted (rerun the command); finished runs are read back, not retrained. Prints a markdown
table: accuracy on FER+ validation (the first --max-val-samples rows), on the posed split (all rows and the rows
whose raters agree with the pose), and the change against all families.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.__main__ import main as trainer_main  # noqa: E402
from trainer.config import AUGMENT_FAMILIES  # noqa: E402


def run(name: str, families: list[str], args) -> dict:
    out = Path(args.out) / name
    results = out / "export" / "eval_results.json"
    if not results.is_file():
        init = ["--init", args.init] if args.init else []
        code = trainer_main(["train", "--config", args.config, *init, "--output-dir", str(out), "--epochs", str(args.epochs),
                             "--max-train-samples", str(args.max_train_samples), "--max-val-samples",
                             str(args.max_val_samples), "--augment", ",".join(families), "--neutral-bias", "none",
                             "--no-recalibrate-bn",
                             "--workers", "0"])
        if code:
            sys.exit(code)
    splits = json.loads(results.read_text())["splits"]
    return {k: splits[k]["accuracy"] for k in ("validation", "posed", "posed_clean") if k in splits}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--config", default="trainer/configs/small_cnn_mixed.yaml")
    p.add_argument("--init", default=None, help="starting weights (default: the config's init)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-train-samples", type=int, default=3000)
    p.add_argument("--max-val-samples", type=int, default=1000)
    p.add_argument("--out", default="runs/bench_augment")
    args = p.parse_args()
    rows = {"all families": run("all", list(AUGMENT_FAMILIES), args)}
    for fam in AUGMENT_FAMILIES:
        rows[f"without {fam}"] = run(f"no_{fam}", [f for f in AUGMENT_FAMILIES if f != fam], args)
    base = rows["all families"]
    start = args.init or f"{args.config}'s init"
    print(f"\n{args.epochs} epochs from {start}, {args.max_train_samples} rows per source at most, "
          f"FER+ validation = its first {args.max_val_samples} rows\n")
    print("| augmentation | FER+ val | posed (all) | posed (raters agree) | Δ posed (agree) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        delta = "" if r is base else f"{(r['posed_clean'] - base['posed_clean']) * 100:+.1f}"
        print(f"| {name} | {r['validation']:.3f} | {r['posed']:.3f} | {r['posed_clean']:.3f} | {delta} |")


if __name__ == "__main__":
    main()
