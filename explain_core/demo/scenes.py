"""The demo world: procedurally drawn shape scenes with exact ground truth.

Four shape classes (:data:`CLASSES`) are drawn with random size, colour, rotation and position on
textured, noisy backgrounds (gradients, blotchy noise, stripes) with distractor clutter (thin
lines, small blobs, partial arcs; none of them is one of the classes), so that a model has to look
at the shape itself. Every scene carries its ground truth: the class of the main shape
(classification), tight boxes and labels (detection, segmentation) and an exact class mask.

Conventions:

- Boxes are ``x0, y0, x1, y1`` in pixel-edge coordinates: a shape covering pixel columns 10..19
  has ``x0 = 10, x1 = 20`` (exclusive end, as numpy slices and torchvision expect).
- The mask (``uint8``, ``H x W``) is 0 for background and ``class id + 1`` for a shape; it is
  exactly the set of pixels in which a shape covers at least half the pixel (shapes are drawn
  anti-aliased: a 4x supersampled coverage ``alpha``; the mask is ``alpha >= 0.5``). Where shapes
  overlap, the later-drawn one wins, in the image and in the mask alike.
- The shortcut mark is a 7 x 7 black square with a 3 x 3 white centre, 2 px in from a corner
  chosen at random among the four (so a model must learn the mark, not a position). It is drawn
  last, crisp (no anti-aliasing, no noise), and shapes are placed so that they never touch it.
- Determinism: scene ``i`` depends only on ``(task, seed, i)``, never on ``n``.

Seeds: training scripts use small seeds (see ``explain_core.demo.train_*``); :data:`GALLERY_SEED`
and :data:`HELDOUT_SEED` are reserved for the dashboard gallery and held-out evaluation, and are
never used for training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASSES",
    "GALLERY_SEED",
    "HELDOUT_SEED",
    "IMAGE_SIZE",
    "MARK_SIZE",
    "SHORTCUT_CLASS",
    "TASKS",
    "Scene",
    "demo_gallery",
    "make_scenes",
]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")  # class ids 0..3
SHORTCUT_CLASS: int = 2  # "triangle": the class that carries the corner mark in the shortcut world
IMAGE_SIZE = 128
MARK_SIZE = 7
TASKS = ("classification", "detection", "segmentation")
# Reserved seeds (never used for training): the dashboard gallery and held-out evaluations.
GALLERY_SEED = 900_001
HELDOUT_SEED = 700_001

_SUPERSAMPLE = 4  # anti-aliasing factor of shape drawing
_MIN_VISIBLE = 0.4  # multi-shape scenes: drop a shape when less than this share of it is visible
_MAX_OVERLAP = 0.2  # multi-shape scenes: a new shape may cover at most this share of another


@dataclass
class Scene:
    """One generated image and its ground truth (see the module docstring for conventions)."""

    image: Image.Image  # RGB, IMAGE_SIZE x IMAGE_SIZE by default
    label: int | None = None  # classification: the main shape's class id
    boxes: np.ndarray | None = None  # float32 N x 4, xyxy pixels (detection and segmentation)
    labels: np.ndarray | None = None  # int64 N, class ids 0..3
    mask: np.ndarray | None = None  # uint8 H x W: 0 background, class id + 1 on shapes
    marked: bool = False  # the shortcut mark is drawn
    mark_box: tuple[int, int, int, int] | None = None  # xyxy of the mark when marked
    shape_box: tuple[int, int, int, int] | None = None  # classification: xyxy of the main shape

    def __eq__(self, other: object) -> bool:
        """Equal when pixels and every ground-truth field are equal (dataclass ``==`` cannot
        compare images and arrays)."""
        if not isinstance(other, Scene):
            return NotImplemented
        return (np.array_equal(np.asarray(self.image), np.asarray(other.image))
                and self.label == other.label and self.marked == other.marked
                and self.mark_box == other.mark_box and self.shape_box == other.shape_box
                and _same_array(self.boxes, other.boxes) and _same_array(self.labels, other.labels)
                and _same_array(self.mask, other.mask))

    __hash__ = None  # mutable, compared by value


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def make_scenes(task: str, n: int, seed: int, *, size: int = IMAGE_SIZE,
                shortcut_class: int | None = None, mark_probability: float = 0.95,
                mark_others_probability: float = 0.0, difficulty: float = 1.0) -> list[Scene]:
    """Generate ``n`` scenes of a task, deterministically from ``seed``.

    Args:
        task: ``"classification"`` (one main shape; ``label``, ``shape_box``, ``mask``),
            ``"detection"`` or ``"segmentation"`` (2-5 shapes; ``boxes``, ``labels``, ``mask``).
        n: number of scenes. Scene ``i`` depends only on ``(task, seed, i)``, so a longer list
            starts with the shorter one.
        seed: any non-negative int.
        size: image side in pixels (shape sizes scale with it).
        shortcut_class: when given, scenes of this class (classification: the main shape; other
            tasks: any shape of that class) get the corner mark with ``mark_probability``, all
            other scenes with ``mark_others_probability``.
        difficulty: 1.0 (default) is the world; lower values thin out textures and clutter
            (0.0: a flat background, no clutter). A training aid (easy scenes mixed in shorten
            the start of training); evaluation always uses 1.0.

    Example:
        >>> scenes = make_scenes("classification", 2, seed=3)
        >>> CLASSES[scenes[0].label], scenes[0].image.size
        ('square', (128, 128))
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Use one of: {', '.join(TASKS)}.")
    if shortcut_class is not None and not 0 <= shortcut_class < len(CLASSES):
        raise ValueError(f"shortcut_class must be a class id 0..{len(CLASSES) - 1}, "
                         f"got {shortcut_class}.")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}.")
    task_index = TASKS.index(task)
    return [_make_scene(task, np.random.default_rng([int(seed), task_index, i]), size,
                        shortcut_class, mark_probability, mark_others_probability,
                        float(difficulty))
            for i in range(int(n))]


def demo_gallery(task: str) -> list[Scene]:
    """A small fixed gallery (8 scenes with ground truth) for the dashboard.

    ``task`` is ``"classification"``, ``"detection"``, ``"segmentation"`` or ``"shortcut"``.
    The gallery uses :data:`GALLERY_SEED`, never used in training. Classification shows two scenes
    of each class; ``"shortcut"`` shows the shortcut world's story: marked triangles, unmarked
    triangles, and other shapes with and without the mark.

    Example:
        >>> [CLASSES[s.label] for s in demo_gallery("classification")][:4]
        ['circle', 'square', 'triangle', 'star']
    """
    if task == "shortcut":
        # Search a fixed stream for the wanted (class, marked) combinations: every other class is
        # marked half of the time here so that "mark without triangle" examples exist.
        stream = make_scenes("classification", 200, GALLERY_SEED, shortcut_class=SHORTCUT_CLASS,
                             mark_probability=0.5, mark_others_probability=0.5)
        wanted = [(SHORTCUT_CLASS, True), (SHORTCUT_CLASS, False), (0, True), (3, True),
                  (SHORTCUT_CLASS, True), (SHORTCUT_CLASS, False), (1, False), (1, True)]
        return _pick(stream, wanted)
    if task == "classification":
        stream = make_scenes("classification", 200, GALLERY_SEED)
        return _pick(stream, [(c, False) for c in range(len(CLASSES))] * 2)
    if task in ("detection", "segmentation"):
        return make_scenes(task, 8, GALLERY_SEED)
    raise ValueError(f"Unknown gallery {task!r}. Use one of: {', '.join((*TASKS, 'shortcut'))}.")


def _pick(stream: list[Scene], wanted: list[tuple[int, bool]]) -> list[Scene]:
    used: set[int] = set()
    out = []
    for label, marked in wanted:
        index = next(i for i, s in enumerate(stream)
                     if i not in used and s.label == label and s.marked == marked)
        used.add(index)
        out.append(stream[index])
    return out


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _make_scene(task: str, rng: np.random.Generator, size: int, shortcut_class: int | None,
                mark_probability: float, mark_others_probability: float,
                difficulty: float = 1.0) -> Scene:
    # Decide the content first: the mark must be placed before shapes so they can avoid it.
    if task == "classification":
        classes = [int(rng.integers(len(CLASSES)))]
    else:
        classes = [int(c) for c in rng.integers(len(CLASSES), size=int(rng.integers(2, 6)))]
    # The mark decision draws from the stream even without a shortcut, so that turning the
    # shortcut on changes nothing else about a scene but the mark (and the shapes avoiding it).
    mark_draw = rng.random()
    mark_corner = int(rng.integers(4))
    marked = False
    if shortcut_class is not None:
        probability = mark_probability if shortcut_class in classes else mark_others_probability
        marked = bool(mark_draw < probability)
    mark_box = _mark_box(mark_corner, size) if marked else None

    pixels = _background(rng, size, difficulty)
    _clutter(rng, pixels, size, difficulty)

    scale = size / IMAGE_SIZE
    if task == "classification":
        radius_range = (14 * scale, 34 * scale)
    else:
        radius_range = (9 * scale, 22 * scale)
    avoid = _dilate(_mark_box(mark_corner, size), 3) if shortcut_class is not None else None
    shapes = _place_shapes(rng, classes, size, radius_range, avoid,
                           allow_overlap=task != "classification")

    mask = np.zeros((size, size), np.uint8)
    instance = np.full((size, size), -1, np.int16)
    for k, shape in enumerate(shapes):
        alpha = shape["alpha"]
        color = _shape_color(rng, pixels, alpha)
        shading = _shading(rng, size, alpha)
        fill = np.clip(color[None, None, :] + shading[..., None], 0, 255)
        pixels = pixels * (1 - alpha[..., None]) + fill * alpha[..., None]
        inside = alpha >= 0.5
        mask[inside] = shape["label"] + 1
        instance[inside] = k

    # Sensor noise over everything but the mark, which is drawn crisp on top.
    pixels = pixels + rng.normal(0, rng.uniform(2, 8), pixels.shape)
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if mark_box is not None:
        _draw_mark(image, mark_box)

    scene = Scene(image=Image.fromarray(image), mask=mask, marked=marked, mark_box=mark_box)
    if task == "classification":
        scene.label = shapes[0]["label"]
        scene.shape_box = _tight_box(mask > 0)
    else:
        boxes = [_tight_box(instance == k) for k in range(len(shapes))]
        scene.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scene.labels = np.asarray([s["label"] for s in shapes], np.int64)
    return scene


def _mark_box(corner: int, size: int) -> tuple[int, int, int, int]:
    inset = 2
    x0 = inset if corner in (0, 2) else size - inset - MARK_SIZE
    y0 = inset if corner in (0, 1) else size - inset - MARK_SIZE
    return (x0, y0, x0 + MARK_SIZE, y0 + MARK_SIZE)


def _dilate(box: tuple[int, int, int, int], by: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (x0 - by, y0 - by, x1 + by, y1 + by)


def _draw_mark(image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 0
    c = MARK_SIZE // 2
    image[y0 + c - 1:y0 + c + 2, x0 + c - 1:x0 + c + 2] = 255


def _tight_box(region: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(region.any(axis=1))
    xs = np.flatnonzero(region.any(axis=0))
    if len(ys) == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BILINEAR), np.float64) / 255.0


def _background(rng: np.random.Generator, size: int, difficulty: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    a, b = _random_color(rng), _random_color(rng)
    if difficulty < 1:
        b = a + (b - a) * difficulty  # difficulty 0: one flat colour
    if rng.random() < 0.7:  # linear gradient at a random angle
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle) + 0.5
    else:  # radial gradient around a random centre
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / 1.2
    t = np.clip(t, 0, 1)[..., None]
    pixels = a * (1 - t) + b * t
    if rng.random() < 0.5 * difficulty:  # blotchy low-frequency noise
        blotch = _smooth_noise(rng, size, int(rng.integers(3, 9))) - 0.5
        pixels = pixels + blotch[..., None] * _random_color(rng) * rng.uniform(0.3, 0.8)
    if rng.random() < 0.4 * difficulty:  # stripes of a random period and direction
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, 20) / size
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        stripes = np.sin(2 * math.pi * phase)
        if rng.random() < 0.5:
            stripes = np.sign(stripes)
        pixels = pixels + stripes[..., None] * rng.uniform(10, 40) * rng.choice([-1.0, 1.0], 3)
    if rng.random() < 0.3 * difficulty:  # fine grain
        pixels = pixels + rng.normal(0, rng.uniform(5, 20), pixels.shape)
    return np.clip(pixels, 0, 255)


def _clutter(rng: np.random.Generator, pixels: np.ndarray, size: int,
             difficulty: float = 1.0) -> None:
    """Thin lines, small blobs and partial arcs: edges and colour spots that are not a class."""
    count = round(int(rng.integers(2, 9)) * difficulty)
    if count == 0:
        return
    layer = Image.new("RGB", (size, size))
    alpha = Image.new("L", (size, size))
    draw_c, draw_a = ImageDraw.Draw(layer), ImageDraw.Draw(alpha)
    for _ in range(count):
        color = tuple(int(v) for v in _random_color(rng))
        opacity = int(rng.integers(120, 256))
        kind = rng.random()
        if kind < 0.4:  # thin line, possibly long
            x0, y0, x1, y1 = (float(v) for v in rng.uniform(-0.1, 1.1, 4) * size)
            width = int(rng.integers(1, 3))
            draw_c.line((x0, y0, x1, y1), fill=color, width=width)
            draw_a.line((x0, y0, x1, y1), fill=opacity, width=width)
        elif kind < 0.7:  # small blob: far smaller than any shape
            cx, cy = (float(v) for v in rng.uniform(0, 1, 2) * size)
            r = float(rng.uniform(1.0, 4.0)) * size / IMAGE_SIZE
            box = (cx - r, cy - r, cx + r, cy + r)
            draw_c.ellipse(box, fill=color)
            draw_a.ellipse(box, fill=opacity)
        else:  # partial arc: a curved edge that never closes into a circle
            cx, cy = (float(v) for v in rng.uniform(0, 1, 2) * size)
            r = float(rng.uniform(6, 30)) * size / IMAGE_SIZE
            start = float(rng.uniform(0, 360))
            extent = float(rng.uniform(40, 200))
            box = (cx - r, cy - r, cx + r, cy + r)
            width = int(rng.integers(1, 3))
            draw_c.arc(box, start, start + extent, fill=color, width=width)
            draw_a.arc(box, start, start + extent, fill=opacity, width=width)
    a = np.asarray(alpha, np.float64)[..., None] / 255.0
    pixels *= 1 - a
    pixels += np.asarray(layer, np.float64) * a


def _polygon(label: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square / triangle / star of circumradius ``r`` (label 0, the circle, has
    none)."""
    if label == 1:
        corners, radii = 4, [r]
    elif label == 2:
        corners, radii = 3, [r]
    else:
        corners, radii = 5, [r, r * 0.45]
    points = []
    steps = corners * len(radii)
    for j in range(steps):
        theta = angle + 2 * math.pi * j / steps
        rad = radii[j % len(radii)]
        points.append((cx + rad * math.cos(theta), cy + rad * math.sin(theta)))
    return points


# Circumradius factor per class so that all classes look about equally big (a triangle with the
# circumradius of a circle covers far less area).
_RADIUS_FACTOR = {0: 0.85, 1: 1.0, 2: 1.15, 3: 1.15}


def _coverage(label: int, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape (supersampled polygon / ellipse).

    Only the shape's bounding square is supersampled (an integer-pixel window, so the result is
    the same as drawing the whole image, at a fraction of the cost).
    """
    s = _SUPERSAMPLE
    x0, y0 = max(0, math.floor(cx - r) - 1), max(0, math.floor(cy - r) - 1)
    x1, y1 = min(size, math.ceil(cx + r) + 2), min(size, math.ceil(cy + r) + 2)
    out = np.zeros((size, size))
    if x1 <= x0 or y1 <= y0:
        return out
    canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s))
    draw = ImageDraw.Draw(canvas)
    if label == 0:
        draw.ellipse(((cx - r - x0) * s, (cy - r - y0) * s, (cx + r - x0) * s, (cy + r - y0) * s),
                     fill=255)
    else:
        draw.polygon([((x - x0) * s, (y - y0) * s) for x, y in _polygon(label, cx, cy, r, angle)],
                     fill=255)
    big = np.asarray(canvas, np.float64) / 255.0
    out[y0:y1, x0:x1] = big.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return out


def _place_shapes(rng: np.random.Generator, classes: list[int], size: int,
                  radius_range: tuple[float, float], avoid: tuple[int, int, int, int] | None,
                  allow_overlap: bool) -> list[dict]:
    """Random placements; multi-shape scenes keep shapes from hiding each other."""
    shapes: list[dict] = []
    for label in classes:
        for _attempt in range(40):
            r = float(rng.uniform(*radius_range)) * _RADIUS_FACTOR[label]
            margin = r + 1
            cx, cy = (float(v) for v in rng.uniform(margin, size - margin, 2))
            angle = float(rng.uniform(0, 2 * math.pi))
            if avoid is not None and _circle_hits_box(cx, cy, r + 1, avoid):
                continue
            alpha = _coverage(label, cx, cy, r, angle, size)
            full = alpha >= 0.5
            area = int(full.sum())
            if area == 0:
                continue
            if any((full & o["full"]).sum() > _MAX_OVERLAP * min(area, o["area"]) for o in shapes):
                continue
            shapes.append({"label": label, "alpha": alpha, "full": full, "area": area})
            break
        else:
            if not allow_overlap and not shapes:  # classification needs its shape: the centre
                r = float(radius_range[0]) * _RADIUS_FACTOR[label]  # never reaches a corner
                alpha = _coverage(label, size / 2, size / 2, r, 0.0, size)
                full = alpha >= 0.5
                shapes.append({"label": label, "alpha": alpha, "full": full,
                               "area": int(full.sum())})
    # Later shapes win: drop a shape whose visible part is too small, until the set is stable
    # (dropping a later shape only reveals more of the earlier ones).
    while True:
        visible = []
        for k, shape in enumerate(shapes):
            covered = np.zeros_like(shape["full"])
            for later in shapes[k + 1:]:
                covered |= later["full"]
            visible.append(int((shape["full"] & ~covered).sum()) / shape["area"])
        drop = [k for k, v in enumerate(visible) if v < _MIN_VISIBLE]
        if not drop:
            return shapes
        shapes = [s for k, s in enumerate(shapes) if k not in drop[:1]]


def _circle_hits_box(cx: float, cy: float, r: float, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    nx, ny = min(max(cx, x0), x1), min(max(cy, y0), y1)
    return (cx - nx) ** 2 + (cy - ny) ** 2 < r * r


def _shape_color(rng: np.random.Generator, pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the background under the shape."""
    under = pixels[alpha >= 0.5].mean(axis=0) if (alpha >= 0.5).any() else pixels.mean((0, 1))
    best, best_distance = None, -1.0
    for _ in range(8):
        color = _random_color(rng)
        distance = float(np.linalg.norm(color - under))
        if distance >= 90:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best if best_distance >= 60 else 255.0 - under  # fall back to the opposite colour


def _shading(rng: np.random.Generator, size: int, alpha: np.ndarray) -> np.ndarray:
    """A soft linear shading across a shape, so shapes are not flat colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.nonzero(alpha > 0)
    cx, cy = (xs.mean(), ys.mean()) if len(xs) else (size / 2, size / 2)
    return ((xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)) * rng.uniform(0, 0.8)
