"""References for crates/loop/tests/images.rs, from PIL and torchvision themselves.

Usage: reference.py DIR

DIR may already hold files the Rust test wrote (JPEGs PIL cannot write, in
DIR/jpeg/). This script adds the rest of the inputs under DIR:
  png/      every PNG colour type and bit depth, plain and interlaced (a small
            encoder below, so every variant is under control), with tRNS chunks
  jpeg/     JPEGs written by PIL: 4:4:4, 4:2:2, 4:2:0, progressive, grayscale,
            CMYK, RGB (no YCbCr), restart markers, stray bytes before a marker
  bad/      files PIL refuses: truncated, corrupt, not an image
  folder/   an ImageFolder tree; empty/ and noclass/ trees torchvision refuses
and writes what PIL and torchvision make of them:
  expected.safetensors  decoded pixels ("decode/NAME", uint8 HWC) and transform
                        outputs ("transform/I/SEED")
  expected.json         {"decode": [names], "bad": [names], "folder": {...},
                         "transforms": [{"specs", "input", "seeds", "next"}],
                         "transform_errors": [{"specs", "input", "message"}]}
Each transform case runs its torchvision pipeline (v2.Compose of ToImage(),
the transforms, ToDtype(float32, scale=True) where kiln's pipeline puts it)
on the PIL image after torch.manual_seed(seed); "next" is the torch.rand(1)
drawn right after, so the test also checks how many draws each case took.
"""
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode as IM

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

# --- a PNG encoder with every colour type, bit depth, filter and Adam7 --------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """One row of samples (ints) as PNG bytes: packed MSB first below 8 bits, big-endian at 16."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(s)) for s in samples)
    if depth == 8:
        return bytes(int(s) for s in samples)
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        byte = 0
        for k, s in enumerate(samples[i : i + per]):
            byte |= int(s) << (8 - depth * (k + 1))
        out.append(byte)
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp):
    """Filters each row with type (row index mod 5): None, Sub, Up, Average, Paeth."""
    out = []
    prev = bytes(len(rows[0])) if rows else b""
    for y, row in enumerate(rows):
        kind = y % 5
        f = bytearray()
        for x, v in enumerate(row):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
            f.append((v - pred) & 0xFF)
        out.append(bytes([kind]) + bytes(f))
        prev = row
    return b"".join(out)


def encode_png(pixels, depth, ctype, interlace=False, extra=b""):
    """pixels: int array [H, W, channels] of samples."""
    h, w, ch = pixels.shape
    bpp = max(1, depth * ch // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = pixels[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            rows = [pack_row(r.reshape(-1), depth) for r in sub]
            raw += filter_rows(rows, bpp)
    else:
        raw = filter_rows([pack_row(r.reshape(-1), depth) for r in pixels], bpp)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_pngs(root, rng):
    os.makedirs(root, exist_ok=True)
    names = []

    def put(name, data):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        names.append(f"png/{name}")

    for interlace in (False, True):
        tag = "i" if interlace else "p"
        for w, h in ((13, 7), (1, 1), (9, 11)):
            size = f"{w}x{h}"
            for depth in (1, 2, 4, 8, 16):
                px = rng.integers(0, 1 << depth, size=(h, w, 1))
                put(f"gray{depth}_{size}_{tag}.png", encode_png(px, depth, 0, interlace))
            for depth in (8, 16):
                put(f"rgb{depth}_{size}_{tag}.png", encode_png(rng.integers(0, 1 << depth, size=(h, w, 3)), depth, 2, interlace))
                put(f"rgba{depth}_{size}_{tag}.png", encode_png(rng.integers(0, 1 << depth, size=(h, w, 4)), depth, 6, interlace))
                put(f"gray_alpha{depth}_{size}_{tag}.png", encode_png(rng.integers(0, 1 << depth, size=(h, w, 2)), depth, 4, interlace))
            for depth in (1, 2, 4, 8):
                n = 1 << depth
                plte = chunk(b"PLTE", bytes(rng.integers(0, 256, size=3 * n, dtype=np.uint8)))
                px = rng.integers(0, n, size=(h, w, 1))
                put(f"palette{depth}_{size}_{tag}.png", encode_png(px, depth, 3, interlace, plte))
        # Transparency that PIL keeps in `info` and convert("RGB") ignores.
        n = 16
        plte = chunk(b"PLTE", bytes(rng.integers(0, 256, size=3 * n, dtype=np.uint8)))
        trns = chunk(b"tRNS", bytes(rng.integers(0, 256, size=n, dtype=np.uint8)))
        put(f"palette_trns_{tag}.png", encode_png(rng.integers(0, n, size=(10, 12, 1)), 8, 3, interlace, plte + trns))
        put(f"palette_trns1_{tag}.png", encode_png(rng.integers(0, n, size=(10, 12, 1)), 4, 3, interlace, plte + chunk(b"tRNS", bytes([0]))))
        put(f"gray_trns_{tag}.png", encode_png(rng.integers(0, 256, size=(10, 12, 1)), 8, 0, interlace, chunk(b"tRNS", struct.pack(">H", 7))))
        put(f"gray16_trns_{tag}.png", encode_png(rng.integers(0, 600, size=(10, 12, 1)), 16, 0, interlace, chunk(b"tRNS", struct.pack(">H", 300))))
        put(f"rgb_trns_{tag}.png", encode_png(rng.integers(0, 256, size=(10, 12, 3)), 8, 2, interlace, chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))))
    # 16-bit grayscale around 255: PIL clips (I;16 -> RGB), it does not scale.
    small = np.array([[0, 1, 254, 255, 256, 257, 1000, 65535]]).reshape(1, 8, 1)
    put("gray16_clip.png", encode_png(small, 16, 0))
    # A palette shorter than the indices used: PIL's missing entries are black.
    short = chunk(b"PLTE", bytes([10, 20, 30, 40, 50, 60]))
    put("palette_short.png", encode_png(np.array([[0, 1, 2, 200]]).reshape(1, 4, 1), 8, 3, False, short))
    # Inputs of the transform cases.
    put("photo_37x29.png", encode_png(base_image(rng, 37, 29), 8, 2))
    put("gray_photo_38x30.png", encode_png(base_image(rng, 38, 30)[..., 1:2], 8, 0, True))
    # An extension that lies: PIL (and kiln) look at the content.
    put("rgb_named.jpg", encode_png(rng.integers(0, 256, size=(6, 5, 3)), 8, 2))
    return names


def base_image(rng, w, h):
    """A smooth colourful image (JPEG-friendly) with some noise."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack(
        [
            127 + 120 * np.sin(x / 5.0),
            127 + 120 * np.cos(y / 4.0),
            127 + 100 * np.sin((x + y) / 7.0),
        ],
        axis=-1,
    )
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpegs(root, rng):
    os.makedirs(root, exist_ok=True)
    rgb = Image.fromarray(base_image(rng, 37, 29))
    variants = {
        "q90_444.jpg": dict(quality=90, subsampling=0),
        "q75_422.jpg": dict(quality=75, subsampling=1),
        "q75_420.jpg": dict(quality=75, subsampling=2),
        "q50_420_progressive.jpg": dict(quality=50, subsampling=2, progressive=True),
        "q95_444_progressive.jpg": dict(quality=95, subsampling=0, progressive=True),
        "q80_420_optimized.jpg": dict(quality=80, subsampling=2, optimize=True),
        "q85_rgb.jpg": dict(quality=85, subsampling=0, keep_rgb=True),
        "q85_420_restart.jpg": dict(quality=85, subsampling=2, restart_marker_blocks=3),
    }
    for name, opts in variants.items():
        rgb.save(os.path.join(root, name), "JPEG", **opts)
    Image.fromarray(base_image(rng, 40, 33)).save(os.path.join(root, "q75_420_40x33.jpg"), "JPEG", quality=75)
    Image.fromarray(base_image(rng, 16, 16)).save(os.path.join(root, "q75_420_16x16.jpg"), "JPEG", quality=75)
    gray = Image.fromarray(base_image(rng, 23, 19)[..., 0])
    gray.save(os.path.join(root, "gray.jpg"), "JPEG", quality=80)
    gray.save(os.path.join(root, "gray_progressive.jpg"), "JPEG", quality=80, progressive=True)
    cmyk = Image.fromarray(rng.integers(0, 256, size=(15, 21, 4), dtype=np.uint8), "CMYK")
    cmyk.save(os.path.join(root, "cmyk.jpg"), "JPEG", quality=90)
    # Stray bytes before a marker: libjpeg warns, PIL loads it.
    with open(os.path.join(root, "q75_420.jpg"), "rb") as f:
        data = f.read()
    eoi = data.rfind(b"\xff\xd9")
    with open(os.path.join(root, "extraneous.jpg"), "wb") as f:
        f.write(data[:eoi] + b"\x00\x00\x00" + data[eoi:])
    return sorted(f"jpeg/{n}" for n in os.listdir(root))


def write_bad(root, rng):
    os.makedirs(root, exist_ok=True)
    png = encode_png(rng.integers(0, 256, size=(20, 20, 3)), 8, 2)
    jpg_path = os.path.join(os.path.dirname(root), "jpeg", "q75_420.jpg")
    with open(jpg_path, "rb") as f:
        jpg = f.read()
    bad = {
        "truncated.png": png[: len(png) // 2],
        "corrupt.png": png[:60] + bytes(rng.integers(0, 256, size=len(png) - 80, dtype=np.uint8)) + png[-20:],
        "header_only.png": png[:33],
        "truncated.jpg": jpg[: len(jpg) // 2],
        "header_only.jpg": jpg[:200],
        "no_eoi.jpg": jpg[:-2],  # every scan there, the end marker missing: PIL calls it truncated
        "text.png": b"this is not an image\n",
        "empty.jpg": b"",
        "gif_named.png": b"GIF89a" + bytes(30),
    }
    for name, data in bad.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    names = []
    for name in sorted(bad):
        try:
            Image.open(os.path.join(root, name)).convert("RGB")
        except Exception:
            names.append(f"bad/{name}")
            continue
        raise SystemExit(f"PIL loads bad/{name}; it cannot be a bad input")
    return names


def write_folder(root, rng):
    """A tree with tricky names: case, spaces and '-' (sorting before '/'),
    nested and linked directories, upper-case extensions, non-images."""
    def touch(rel):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(encode_png(rng.integers(0, 256, size=(2, 3, 3)), 8, 2))

    for rel in [
        "cat/b.png", "cat/a.PNG", "cat/c.JpEg", "cat/notes.txt", "cat/noext",
        "cat/x/1.png", "cat/x y/2.png", "cat/x-y/3.png", "cat/x/z/4.webp", "cat/.hidden.png",
        "Dog/1.jpg", "Dog/10.jpg", "Dog/2.jpg", "Dog/é.png", "Dog/e.png",
        "bird/deep/er/f.tiff", "bird/a.bmp", "bird/readme.md",
        "a b/one.ppm", "a-b/two.pgm",
    ]:
        touch(rel)
    os.symlink(os.path.join(root, "cat", "x"), os.path.join(root, "bird", "linked"))
    os.symlink(os.path.join(root, "bird"), os.path.join(root, "zebra"))
    with open(os.path.join(root, "not_a_class.png"), "wb") as f:
        f.write(b"files at the top are ignored")
    ds = ImageFolder(root)
    return {
        "classes": ds.classes,
        "samples": [[os.path.relpath(p, root), c] for p, c in ds.samples],
    }


def folder_errors(base):
    """Trees torchvision refuses: a class without images, no class at all."""
    empty = os.path.join(base, "empty")
    for rel in ["full/a.png", "hollow/readme.txt", "void/.keep"]:
        path = os.path.join(empty, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")
    noclass = os.path.join(base, "noclass")
    os.makedirs(noclass, exist_ok=True)
    with open(os.path.join(noclass, "a.png"), "wb") as f:
        f.write(b"x")
    out = {}
    for name, path in (("empty", empty), ("noclass", noclass)):
        try:
            ImageFolder(path)
        except FileNotFoundError as e:
            out[name] = str(e)
        else:
            raise SystemExit(f"ImageFolder accepts {name}/")
    return out


# --- transforms ------------------------------------------------------------------

F32 = v2.ToDtype(torch.float32, scale=True)
NORM = dict(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
NORM_SPEC = "normalize:mean=0.5;0.4;0.3,std=0.2;0.25;0.3"

# (kiln specs, torchvision transforms after ToImage(), inputs). The
# torchvision list has the ToDtype kiln's pipeline inserts.
CASES = [
    (["resize:size=24"], [v2.Resize(24), F32]),
    (["resize:size=20;30"], [v2.Resize((20, 30)), F32]),
    (["resize:size=60,interpolation=bicubic"], [v2.Resize(60, interpolation=IM.BICUBIC), F32]),
    (["resize:size=17,interpolation=bicubic"], [v2.Resize(17, interpolation=IM.BICUBIC), F32]),
    (["resize:size=17,interpolation=nearest"], [v2.Resize(17, interpolation=IM.NEAREST), F32]),
    (["resize:size=45,interpolation=nearest-exact"], [v2.Resize(45, interpolation=IM.NEAREST_EXACT), F32]),
    (["resize:size=17,antialias=false"], [v2.Resize(17, antialias=False), F32]),
    (["resize:size=none,max_size=20"], [v2.Resize(None, max_size=20), F32]),
    (["resize:size=16,max_size=20"], [v2.Resize(16, max_size=20), F32]),
    (["Resize:size=29"], [v2.Resize(29), F32]),
    (["to-dtype:dtype=float32,scale=true", "resize:size=21"], [F32, v2.Resize(21)]),
    (["center-crop:size=20"], [v2.CenterCrop(20), F32]),
    (["center-crop:size=21;10"], [v2.CenterCrop((21, 10)), F32]),
    (["center-crop:size=40;50"], [v2.CenterCrop((40, 50)), F32]),
    (["pad:padding=3"], [v2.Pad(3), F32]),
    (["pad:padding=1;2,fill=127"], [v2.Pad([1, 2], fill=127), F32]),
    (["pad:padding=1;2;3;4,fill=10;20;30"], [v2.Pad([1, 2, 3, 4], fill=(10, 20, 30)), F32]),
    (["pad:padding=2;5,padding_mode=edge"], [v2.Pad([2, 5], padding_mode="edge"), F32]),
    (["pad:padding=4;1;2;3,padding_mode=reflect"], [v2.Pad([4, 1, 2, 3], padding_mode="reflect"), F32]),
    (["pad:padding=3;6,padding_mode=symmetric"], [v2.Pad([3, 6], padding_mode="symmetric"), F32]),
    (["pad:padding=-2;3,padding_mode=symmetric"], [v2.Pad([-2, 3], padding_mode="symmetric"), F32]),
    (["to-dtype:dtype=float32,scale=true", "pad:padding=2,fill=0.25;0.5;0.75"], [F32, v2.Pad(2, fill=(0.25, 0.5, 0.75))]),
    (["random-crop:size=24"], [v2.RandomCrop(24), F32]),
    (["random-crop:size=20;28,padding=4"], [v2.RandomCrop((20, 28), padding=4), F32]),
    (["random-crop:size=48,pad_if_needed=true,fill=255;0;0"], [v2.RandomCrop(48, pad_if_needed=True, fill=(255, 0, 0)), F32]),
    (["random-crop:size=30,padding=2;3,padding_mode=reflect"], [v2.RandomCrop(30, padding=[2, 3], padding_mode="reflect"), F32]),
    (["random-crop:size=36;40,pad_if_needed=true,padding_mode=edge"], [v2.RandomCrop((36, 40), pad_if_needed=True, padding_mode="edge"), F32]),
    (["random-crop:size=29;37"], [v2.RandomCrop((29, 37)), F32]),
    (["random-resized-crop:size=24,scale=0.5;1.0"], [v2.RandomResizedCrop(24, scale=(0.5, 1.0)), F32]),
    (["random-resized-crop:size=16;20"], [v2.RandomResizedCrop((16, 20)), F32]),
    (["random-resized-crop:size=32,interpolation=bicubic"], [v2.RandomResizedCrop(32, interpolation=IM.BICUBIC), F32]),
    (["random-resized-crop:size=12,scale=0.99;1.0,ratio=4;5"], [v2.RandomResizedCrop(12, scale=(0.99, 1.0), ratio=(4, 5)), F32]),
    (["random-resized-crop:size=12,scale=0.99;1.0,ratio=0.2;0.25"], [v2.RandomResizedCrop(12, scale=(0.99, 1.0), ratio=(0.2, 0.25)), F32]),
    (["RandomResizedCrop:size=20,antialias=false"], [v2.RandomResizedCrop(20, antialias=False), F32]),
    (["random-horizontal-flip"], [v2.RandomHorizontalFlip(), F32]),
    (["random-vertical-flip:p=0.7"], [v2.RandomVerticalFlip(p=0.7), F32]),
    (["RandomHorizontalFlip:p=1.0", "random-vertical-flip:p=0.0"], [v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=0.0), F32]),
    (["color-jitter:brightness=0.4,contrast=0.4,saturation=0.4,hue=0.1"], [v2.ColorJitter(0.4, 0.4, 0.4, 0.1), F32]),
    (["color-jitter:brightness=0.5;1.5"], [v2.ColorJitter(brightness=(0.5, 1.5)), F32]),
    (["color-jitter:contrast=0.8"], [v2.ColorJitter(contrast=0.8), F32]),
    (["color-jitter:saturation=1.5"], [v2.ColorJitter(saturation=1.5), F32]),
    (["color-jitter:hue=0.5"], [v2.ColorJitter(hue=0.5), F32]),
    (["color-jitter"], [v2.ColorJitter(), F32]),
    (["to-dtype:dtype=float32,scale=true", "color-jitter:brightness=0.4,contrast=0.4,saturation=0.4,hue=0.2"],
     [F32, v2.ColorJitter(0.4, 0.4, 0.4, 0.2)]),
    ([NORM_SPEC], [F32, v2.Normalize(**NORM)]),
    (["random-erasing:p=1.0"], [F32, v2.RandomErasing(p=1.0)]),
    (["random-erasing:p=0.9,value=random"], [F32, v2.RandomErasing(p=0.9, value="random")]),
    (["random-erasing:p=1.0,scale=0.1;0.5,ratio=0.5;2.0,value=0.1;0.2;0.3"],
     [F32, v2.RandomErasing(p=1.0, scale=(0.1, 0.5), ratio=(0.5, 2.0), value=(0.1, 0.2, 0.3))]),
    (["random-erasing:p=1.0,scale=0.9;1.0,ratio=8;9"], [F32, v2.RandomErasing(p=1.0, scale=(0.9, 1.0), ratio=(8, 9))]),
    (["color-jitter:brightness=0.3,hue=0.05", "random-erasing", NORM_SPEC],
     [v2.ColorJitter(brightness=0.3, hue=0.05), F32, v2.RandomErasing(), v2.Normalize(**NORM)]),
    (["random-resized-crop:size=24,scale=0.5;1.0", "random-horizontal-flip", "normalize:mean=0.5;0.5;0.5,std=0.5;0.5;0.5"],
     [v2.RandomResizedCrop(24, scale=(0.5, 1.0)), v2.RandomHorizontalFlip(), F32, v2.Normalize(mean=[0.5] * 3, std=[0.5] * 3)]),
    (["random-crop:size=28,padding=4", "random-horizontal-flip", "color-jitter:brightness=0.2,contrast=0.2,saturation=0.2", NORM_SPEC, "random-erasing:p=0.5,value=random"],
     [v2.RandomCrop(28, padding=4), v2.RandomHorizontalFlip(), v2.ColorJitter(0.2, 0.2, 0.2), F32, v2.Normalize(**NORM), v2.RandomErasing(value="random")]),
    (["to-dtype:dtype=float64,scale=true", "resize:size=20", "center-crop:size=16"], [v2.ToDtype(torch.float64, scale=True), v2.Resize(20), v2.CenterCrop(16)]),
]
INPUTS = ["png/photo_37x29.png", "jpeg/q75_420_40x33.jpg", "jpeg/q90_444.jpg", "png/gray_photo_38x30.png"]
SEEDS = [0, 1, 2, 5]

# Transforms that do not fit the image: torchvision's error, one line.
ERRORS = [
    (["random-crop:size=64"], [v2.RandomCrop(64)]),
    (["random-crop:size=30;50,padding=2"], [v2.RandomCrop((30, 50), padding=2)]),
    (["pad:padding=40,padding_mode=reflect"], [v2.Pad(40, padding_mode="reflect")]),
]


def run_transforms(base, tensors):
    cases = []
    for i, (specs, tv) in enumerate(CASES):
        pipeline = v2.Compose([v2.ToImage(), *tv])
        inputs = INPUTS if i % 2 == 0 else INPUTS[1:3]
        for j, name in enumerate(inputs):
            image = Image.open(os.path.join(base, name)).convert("RGB")
            nexts = []
            for seed in SEEDS:
                torch.manual_seed(seed)
                out = pipeline(image)
                tensors[f"transform/{i}/{j}/{seed}"] = out.as_subclass(torch.Tensor).contiguous().clone()
                nexts.append(torch.rand(1).item())
            cases.append({"case": i, "input_index": j, "specs": specs, "input": name, "seeds": SEEDS, "next": nexts})
    errors = []
    for specs, tv in ERRORS:
        name = INPUTS[0]
        image = Image.open(os.path.join(base, name)).convert("RGB")
        try:
            v2.Compose([v2.ToImage(), *tv])(image)
        except Exception as e:
            errors.append({"specs": specs, "input": name, "message": str(e).splitlines()[0]})
        else:
            raise SystemExit(f"torchvision accepts {specs} on {name}")
    return cases, errors


def main():
    base = sys.argv[1]
    rng = np.random.default_rng(2026)
    decode = write_pngs(os.path.join(base, "png"), rng) + write_jpegs(os.path.join(base, "jpeg"), rng)
    bad = write_bad(os.path.join(base, "bad"), rng)
    tensors = {}
    for name in decode:
        im = Image.open(os.path.join(base, name)).convert("RGB")
        tensors[f"decode/{name}"] = torch.from_numpy(np.array(im)).contiguous()
    folder = write_folder(os.path.join(base, "folder"), rng)
    folder["errors"] = folder_errors(base)
    cases, errors = run_transforms(base, tensors)
    save_file(tensors, os.path.join(base, "expected.safetensors"))
    with open(os.path.join(base, "expected.json"), "w") as f:
        json.dump({"decode": decode, "bad": bad, "folder": folder, "transforms": cases, "transform_errors": errors}, f, indent=1)


if __name__ == "__main__":
    main()
