#!/usr/bin/env python
"""Pretrain the demo's source network and save it as data/source_compact_cnn.keras.

    python recipes/pretrain_source.py            # the exact command behind data/

The source task is 10 classes of formula-generated images (filled shapes and textures,
see recipes/procedural.py), regenerated from `--seed` every time: nothing is
downloaded. The network is `compact_cnn` (~290k parameters), trained from scratch with
every layer and BatchNorm trainable. Only the trained model (no optimizer state) is
saved, atomically, with its source classes in the metadata, so the file stays ~1.2 MB.
Takes about 5-10 minutes on 2 CPU cores.
"""

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # procedural.py; transferkit (checkout)

import keras  # noqa: E402

import procedural  # noqa: E402
from transferkit.training.freezing import FreezePolicy
from transferkit.models.heads import HeadConfig
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model
from transferkit.training.schedule import PhaseConfig, ScheduleConfig
from transferkit.training.orchestrator import fine_tune

BACKBONE = "compact_cnn"
DEFAULT_OUT = HERE.parent / "data" / "source_compact_cnn.keras"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="checkpoint to write "
                   "(default: data/source_compact_cnn.keras)")
    p.add_argument("--seed", type=int, default=0, help="data and init seed (default 0)")
    p.add_argument("--per-class", type=int, default=600,
                   help="training images per source class (default 600)")
    p.add_argument("--epochs", type=int, default=10, help="default 10")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine "
                   "decay (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--image-size", type=int, default=64, help="default 64")
    return p.parse_args(argv)


def pretrain(args):
    """Train on the regenerated source task; returns (model, validation accuracy)."""
    keras.utils.set_random_seed(args.seed)
    classes = procedural.SOURCE_CLASSES
    train = procedural.make_arrays(classes, args.per_class, args.seed, args.image_size)
    # A different seed for validation: same distribution, never the same images.
    val = procedural.make_arrays(classes, max(20, args.per_class // 8), args.seed + 1,
                                 args.image_size)
    model = build_model(BACKBONE, len(classes), weights=None, input_shape=args.image_size,
                        head=HeadConfig(dropout=0.1))
    # From scratch every layer learns, BatchNorm included: there are no source
    # statistics to protect yet. The head-only phase is skipped (0 epochs).
    schedule = ScheduleConfig(
        head=PhaseConfig(epochs=0),
        finetune=PhaseConfig(epochs=args.epochs, learning_rate=args.lr, decay="cosine",
                             warmup_epochs=1, early_stopping_patience=None,
                             freeze=FreezePolicy("none", train_batchnorm=True)),
        batch_size=args.batch_size)
    result = fine_tune(model, train, val, config=schedule, verbose=2)
    return model, result.history[-1]["val_accuracy"]


def save_without_optimizer(model, path, metadata):
    # A fresh, uncompiled copy: the optimizer's moment estimates would triple the file
    # and mean nothing to anyone transferring from it.
    clean = build_model(BACKBONE, model.output_shape[-1], weights=None,
                        input_shape=model.input_shape[1], head=HeadConfig(dropout=0.1))
    clean.set_weights(model.get_weights())
    return save_model(clean, path, metadata=metadata)


def _without_out(argv):
    # Where the file was written is not part of how it was made.
    skip = {i + 1 for i, a in enumerate(argv) if a == "--out"}
    return [a for i, a in enumerate(argv)
            if i not in skip and a != "--out" and not a.startswith("--out=")]


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    model, val_accuracy = pretrain(args)
    metadata = {"class_names": list(procedural.SOURCE_CLASSES), "task": "multiclass",
                "backbone": BACKBONE, "image_size": args.image_size,
                "source": "recipes/procedural.py SOURCE_CLASSES", "seed": args.seed,
                "per_class": args.per_class, "epochs": args.epochs,
                "val_accuracy": round(float(val_accuracy), 4),
                "command": " ".join(["python recipes/pretrain_source.py",
                                     *_without_out(argv or [])])}
    save_without_optimizer(model, args.out, metadata)
    size_mb = os.path.getsize(args.out) / 2**20
    print(f"source val accuracy {val_accuracy:.3f}; wrote {args.out} ({size_mb:.2f} MB) "
          f"in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
