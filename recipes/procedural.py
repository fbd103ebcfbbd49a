"""Formula-generated images: the source task and the sample target task of the demo.

Every image is drawn from a seed alone (numpy + PIL, no downloads), so the datasets in
`data/` can be regenerated bit for bit. Both tasks share the same "world" — a shape in
a random colour, size, position and angle over a random textured background — but
their classes differ:

    source (pretraining, 10 classes): filled shapes and textures
        circle, semicircle, triangle, square, pentagon, hexagon, star,
        stripes, checker, dots
    target (data/sample, 5 classes): hollow and composite shapes
        arrow, cross, crescent, frame, ring

Formula-driven pretraining (e.g. Kataoka et al., "Pre-training without Natural
Images", ACCV 2020) learns edge, corner and curvature filters that transfer; that is
what the demo measures against training from scratch.
"""

import csv
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SOURCE_CLASSES = ("circle", "semicircle", "triangle", "square", "pentagon", "hexagon",
                  "star", "stripes", "checker", "dots")
TARGET_CLASSES = ("arrow", "cross", "crescent", "frame", "ring")
_SS = 2  # supersampling factor: masks are drawn at 2x and box-filtered (antialiasing)


def render(kind, rng, size=64):
    """One (size, size, 3) uint8 image of class `kind`, drawn with generator `rng`."""
    background = _background(rng, size)
    foreground = _colour(rng, away_from=background.mean(axis=(0, 1)))
    if kind in ("stripes", "checker"):
        mask = _pattern(kind, rng, size)
    else:
        mask = _mask(kind, rng, size)
    mask = mask[..., None]
    pixels = background * (1.0 - mask) + foreground * mask
    pixels += rng.normal(0.0, rng.uniform(2.0, 12.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_arrays(classes, per_class, seed, size=64):
    """(uint8 images [N, size, size, 3], int labels [N]) of `classes`, interleaved."""
    rng = np.random.default_rng(seed)
    images = np.empty((per_class * len(classes), size, size, 3), np.uint8)
    labels = np.empty(per_class * len(classes), np.int64)
    for i in range(per_class):
        for c, kind in enumerate(classes):
            n = i * len(classes) + c
            images[n], labels[n] = render(kind, rng, size), c
    return images, labels


# --- backgrounds and colours ---------------------------------------------------------

def write_box_sample(out, count, seed, scene, *, digits, quality=None):
    """Write `count` images to `out`/images and their boxes to `out`/boxes.csv
    (replacing `out`); returns the CSV's path. scene(i, rng) -> (uint8 image, [(label,
    (xmin, ymin, xmax, ymax)), ...]): the boxed sets' one writer. quality: JPEG files
    of this quality (None: PNG). An image without objects is a row of its path alone."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)  # regenerate from scratch: no stale files survive
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        pixels, objects = scene(i, rng)
        name = f"images/{i:0{digits}d}.{'png' if quality is None else 'jpg'}"
        options = {} if quality is None else {"quality": quality}
        Image.fromarray(pixels).save(out / name, **options)
        rows += [[name, label, *box] for label, box in objects] or [[name]]
    with open(out / "boxes.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "xmin", "ymin", "xmax", "ymax"])
        writer.writerows(rows)
    return out / "boxes.csv"


def box_sample_main(doc, write_sample, default_out, count, seed, argv=None):
    """The command line of a boxed sample's generator (--out, --count, --seed)."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", default=str(default_out),
                   help=f"default: {Path(default_out).parent.name}/{Path(default_out).name}")
    p.add_argument("--count", type=int, default=count, help=f"images, default {count}")
    p.add_argument("--seed", type=int, default=seed, help=f"default {seed}")
    args = p.parse_args(argv)
    path = write_sample(args.out, args.count, args.seed)
    print(f"wrote {args.count} images and {path}")


def _colour(rng, away_from=None):
    # Redraw until the colour stands out from the background: a shape of the same
    # colour as its background has no label-bearing pixels at all.
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if away_from is None or np.abs(colour - away_from).sum() > 150:
            return colour
    return 255.0 - away_from


def _background(rng, size):
    a, b = _colour(rng), _colour(rng)
    style = rng.integers(3)
    if style == 0:  # flat
        weight = np.zeros((size, size))
    elif style == 1:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        weight = (xx * math.cos(angle) + yy * math.sin(angle))
        weight = (weight - weight.min()) / (np.ptp(weight) + 1e-6)
    else:  # smooth blotches: low-resolution noise upsampled
        cells = rng.uniform(0, 1, (4, 4))
        weight = np.asarray(Image.fromarray((cells * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC), np.float64) / 255.0
    weight = weight * rng.uniform(0.0, 0.5)  # keep the background low in contrast
    return a * (1 - weight[..., None]) + b * weight[..., None]


# --- shapes --------------------------------------------------------------------------

def _mask(kind, rng, size):
    big = size * _SS
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.42) * big
    cx, cy = (rng.uniform(radius, big - radius) for _ in range(2))
    angle = rng.uniform(0, 2 * math.pi)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "dots":
        for _ in range(rng.integers(5, 14)):
            r = rng.uniform(0.04, 0.08) * big
            x, y = (rng.uniform(r, big - r) for _ in range(2))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    elif kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "semicircle":
        start = math.degrees(angle)
        draw.pieslice(box, start, start + 180, fill=255)
    elif kind in _SIDES:
        draw.polygon(_regular(_SIDES[kind], cx, cy, radius, angle), fill=255)
    elif kind == "star":
        draw.polygon(_star(cx, cy, radius, angle), fill=255)
    elif kind == "ring":
        draw.ellipse(box, fill=255)
        inner = radius * rng.uniform(0.45, 0.7)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif kind == "frame":
        draw.polygon(_regular(4, cx, cy, radius, angle), fill=255)
        draw.polygon(_regular(4, cx, cy, radius * rng.uniform(0.45, 0.7), angle), fill=0)
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        shift = radius * rng.uniform(0.35, 0.6)
        ox, oy = cx + shift * math.cos(angle), cy + shift * math.sin(angle)
        draw.ellipse((ox - radius, oy - radius, ox + radius, oy + radius), fill=0)
    elif kind == "cross":
        arm = rng.uniform(0.25, 0.4)
        draw.polygon(_outline(_CROSS(arm), cx, cy, radius, angle), fill=255)
    elif kind == "arrow":
        draw.polygon(_outline(_ARROW, cx, cy, radius, angle), fill=255)
    else:
        raise ValueError(f"Unknown shape kind {kind!r}; known: "
                         f"{SOURCE_CLASSES + TARGET_CLASSES}")
    small = image.resize((size, size), Image.BOX)
    return np.asarray(small, np.float64) / 255.0


_SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
# Unit outlines (x, y in [-1, 1]) rotated and scaled by _outline.
_ARROW = [(-1.0, -0.2), (0.15, -0.2), (0.15, -0.6), (1.0, 0.0), (0.15, 0.6),
          (0.15, 0.2), (-1.0, 0.2)]


def _CROSS(arm):
    return [(-arm, -1), (arm, -1), (arm, -arm), (1, -arm), (1, arm), (arm, arm),
            (arm, 1), (-arm, 1), (-arm, arm), (-1, arm), (-1, -arm), (-arm, -arm)]


def _outline(points, cx, cy, radius, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c))
            for x, y in points]


def _regular(sides, cx, cy, radius, angle):
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / sides),
             cy + radius * math.sin(angle + 2 * math.pi * k / sides))
            for k in range(sides)]


def _star(cx, cy, radius, angle, points=5, inner=0.45):
    out = []
    for k in range(2 * points):
        r = radius if k % 2 == 0 else radius * inner
        a = angle + math.pi * k / points
        out.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return out


def _pattern(kind, rng, size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 16)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "stripes":
        return (np.sin(2 * math.pi * u / period) > 0).astype(np.float64)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
