"""Writes an image folder (torchvision's ImageFolder layout) from FashionMNIST.

    python3 scripts/reference/make_image_folder.py OUT [--per-class 24] [--test-per-class 8]
        [--format mixed|png|jpeg] [--data-dir .data/fashion-mnist]

OUT/train/CLASS/NNNNN.{png,jpg} and OUT/test/CLASS/..., one directory per
FashionMNIST class (named as the class, so that sorting them reorders the
labels), each image the 28x28 FashionMNIST one tinted by a colour of its own
(RGB, so colour transforms have something to do). With --format mixed
(default) the images are written in turn as RGB PNG, grayscale PNG, RGB JPEG
(quality 90) and grayscale JPEG, so a run reads every kind kiln decodes.
Needs numpy and Pillow only (no torch): kiln's tests and `make bench` run it
with PYTHONPATH=.libtorch.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
KINDS = {"mixed": ["png", "png-gray", "jpeg", "jpeg-gray"], "png": ["png"], "jpeg": ["jpeg"]}


def read_idx(data_dir, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            zero, dtype, rank = struct.unpack(">HBB", data[:4])
            assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte IDX file"
            dims = struct.unpack(">" + "I" * rank, data[4 : 4 + 4 * rank])
            return np.frombuffer(data[4 + 4 * rank :], dtype=np.uint8).reshape(dims)
    sys.exit(f"{data_dir}: no {stem}[.gz]")


def write(images, labels, root, per_class, kinds, rng):
    counts = [0] * len(CLASSES)
    n = 0
    for image, label in zip(images, labels):
        label = int(label)
        if counts[label] >= per_class:
            continue
        tint = rng.uniform(0.4, 1.0, size=3)
        rgb = (image[:, :, None].astype(np.float64) * tint[None, None, :] + rng.uniform(0, 40)).clip(0, 255)
        rgb = Image.fromarray(rgb.astype(np.uint8), "RGB")
        kind = kinds[n % len(kinds)]
        picture = rgb.convert("L") if kind.endswith("-gray") else rgb
        directory = os.path.join(root, CLASSES[label])
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, f"{counts[label]:05d}")
        if kind.startswith("png"):
            picture.save(stem + ".png")
        else:
            picture.save(stem + ".jpg", quality=90)
        counts[label] += 1
        n += 1
        if n == per_class * len(CLASSES):
            return
    sys.exit(f"{root}: not enough images for {per_class} per class")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--per-class", type=int, default=24)
    p.add_argument("--test-per-class", type=int, default=8)
    p.add_argument("--format", choices=sorted(KINDS), default="mixed")
    p.add_argument("--data-dir", default=os.environ.get("KILN_DATA_DIR", ".data/fashion-mnist"))
    args = p.parse_args()
    rng = np.random.default_rng(22)
    kinds = KINDS[args.format]
    train = (read_idx(args.data_dir, "train-images-idx3-ubyte"), read_idx(args.data_dir, "train-labels-idx1-ubyte"))
    write(*train, os.path.join(args.out, "train"), args.per_class, kinds, rng)
    if args.test_per_class > 0:
        test = (read_idx(args.data_dir, "t10k-images-idx3-ubyte"), read_idx(args.data_dir, "t10k-labels-idx1-ubyte"))
        write(*test, os.path.join(args.out, "test"), args.test_per_class, kinds, rng)


if __name__ == "__main__":
    main()
