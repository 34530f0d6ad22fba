"""The mini world: procedural captioned 64x64 RGB scenes of 1-3 flat shapes, a caption grammar
with synonyms, its parser, and a ground-truth sampler that renders a real image for any caption
of the grammar (FID references; every prompt has checkable attributes).

Geometry. The canvas is a 3x3 grid of cells; each object sits in its own cell (centre jittered by
up to 1 px, so its centroid never leaves the cell). A position word in a caption names a REGION
of that grid: "left" = the left column (any row), "top" = the top row, "top left" = that corner
cell, "centre" = the middle cell. An object in cell (row 0, col 0) is therefore truthfully "in
the top left corner", "on the left" and "at the top"; captions pick one of the true phrases.
Relations ("A above B") compare the two objects' rows / columns.

Determinism: every function that draws randomness takes a numpy Generator; `training_pairs(n,
seed)` gives the same images and captions for the same (n, seed), and its item i depends only on
(seed, i), not on n.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from distar.core.errors import DistarError

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # drawn at 256 px and box-filtered to 64: anti-aliased edges for ~0.3 ms/image

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
SIZES = ("small", "large")
# Cell names, row-major; POSITIONS[3 * row + col].
POSITIONS = ("top left", "top", "top right", "left", "centre", "right",
             "bottom left", "bottom", "bottom right")
BACKGROUNDS = ("white", "black", "grey", "gradient")
RELATIONS = ("above", "below", "left of", "right of")
MAX_OBJECTS = 3

# Hues 0-280 degrees apart by >= 25 and far from the neutral backgrounds.
PALETTE = {"red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (245, 215, 30),
           "green": (40, 170, 60), "blue": (40, 80, 225), "purple": (145, 50, 190)}
BACKGROUND_RGB = {"white": (240, 240, 240), "black": (25, 25, 25), "grey": (128, 128, 128)}
GRADIENT = ((225, 232, 240), (105, 112, 125))  # top -> bottom, a pale sky to slate
RADIUS = {"small": 5.0, "large": 7.8}  # half-extent in px; with the jitters below, objects in
# neighbouring cells (centres 19 px apart) do not touch, so connected components count them
CELL_CENTRES = (13.0, 32.0, 51.0)               # px; cells are [0, 21.3), [21.3, 42.7), [42.7, 64)
POSITION_JITTER = 1.0
COLOUR_JITTER = 12
ROTATION_JITTER = 12.0  # degrees, shapes other than circles


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    position: str  # a cell name from POSITIONS


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str


@dataclass(frozen=True)
class Group:
    """What a caption asks about one kind of object; None = the caption does not say."""
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    count: int = 1
    position: str | None = None  # a region name (a POSITIONS entry, read as a region)


@dataclass(frozen=True)
class Request:
    """Everything a caption asks for. `relation` relates groups[0] to groups[1]."""
    groups: tuple[Group, ...]
    relation: str | None = None
    background: str | None = None

    @property
    def empty(self) -> bool:
        return not self.groups and self.background is None


# Grid geometry ---------------------------------------------------------------------------------
def cell(position: str) -> tuple[int, int]:
    """(row, col) of a cell name."""
    i = POSITIONS.index(position)
    return divmod(i, 3)


def region_cells(region: str) -> tuple[str, ...]:
    """The cells a region word covers ('left' = the left column, 'top left' = one cell)."""
    r, c = cell(region)
    if region == "centre":
        return ("centre",)
    if r == 1:   # 'left' / 'right': a column
        return tuple(p for p in POSITIONS if cell(p)[1] == c)
    if c == 1:   # 'top' / 'bottom': a row
        return tuple(p for p in POSITIONS if cell(p)[0] == r)
    return (region,)  # a corner


def in_region(position: str, region: str) -> bool:
    return position in region_cells(region)


def relation_holds(a: str, b: str, relation: str) -> bool:
    """Whether the object in cell a is `relation` the object in cell b."""
    (ra, ca), (rb, cb) = cell(a), cell(b)
    return {"above": ra < rb, "below": ra > rb, "left of": ca < cb, "right of": ca > cb}[relation]


def position_to_cell(x: float, y: float) -> str:
    """The cell of a point in pixel coordinates of a 64 px image."""
    third = IMAGE_SIZE / 3
    col = min(2, max(0, int(x // third)))
    row = min(2, max(0, int(y // third)))
    return POSITIONS[3 * row + col]


CHECKS_VERSION = "strict-v2"  # bump when request_checks changes: the attribute metrics' version


def request_checks(scene: Scene, req: Request) -> dict[str, bool]:
    """Each attribute a request asks for, checked strictly against a scene (GenEval-style units;
    all True = the image shows exactly what was asked). Per group i: 'i.shape' (an object of that
    shape exists), 'i.colour' (of that colour, bound to the asked shape), 'i.size' (an object
    matching shape, colour and size), 'i.count' (exactly the asked number of objects match, one
    included), 'i.position' (every matching object lies in the region); 'relation' (every pair of
    the two groups' matches); 'only_asked' (no object outside the groups' descriptions: an extra
    object fails it); 'background'. Before CHECKS_VERSION strict-v2 a single object's count and
    extra objects were not checked, so 'a red circle' passed beside a blue square."""
    checks: dict[str, bool] = {}
    matches = []
    for i, g in enumerate(req.groups):
        objs = scene.objects
        m = [o for o in objs if _describes(g, (o.shape, o.colour, o.size))]
        if g.shape:
            checks[f"{i}.shape"] = any(o.shape == g.shape for o in objs)
        if g.colour:
            checks[f"{i}.colour"] = any(o.colour == g.colour and g.shape in (None, o.shape)
                                        for o in objs)
        if g.size:
            checks[f"{i}.size"] = bool(m)
        checks[f"{i}.count"] = len(m) == g.count
        if g.position:
            checks[f"{i}.position"] = bool(m) and all(in_region(o.position, g.position)
                                                      for o in m)
        matches.append(m)
    if req.relation and len(matches) >= 2:
        checks["relation"] = bool(matches[0]) and bool(matches[1]) and all(
            relation_holds(a.position, b.position, req.relation)
            for a in matches[0] for b in matches[1])
    if req.groups:
        checks["only_asked"] = all(any(_describes(g, (o.shape, o.colour, o.size))
                                       for g in req.groups) for o in scene.objects)
    if req.background:
        checks["background"] = scene.background == req.background
    return checks


# Sampling scenes -------------------------------------------------------------------------------
def _choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: one object (45%), 2-3 identical objects (25%) or two different ones (30%).
    Pairs share a row or a column half the time, so relation captions are common."""
    bg = _choice(rng, BACKGROUNDS)
    kind = rng.random()
    if kind < 0.45:
        return Scene((Obj(_choice(rng, SHAPES), _choice(rng, COLOURS), _choice(rng, SIZES),
                          _choice(rng, POSITIONS)),), bg)
    if kind < 0.70:
        n = int(rng.integers(2, MAX_OBJECTS + 1))
        shape, colour, size = _choice(rng, SHAPES), _choice(rng, COLOURS), _choice(rng, SIZES)
        if rng.random() < 0.4:  # all on one side, so "two red circles on the left" is true
            cells = region_cells(_choice(rng, ("left", "right", "top", "bottom")))
        else:
            cells = POSITIONS
        cells = [cells[i] for i in rng.permutation(len(cells))[:n]]
        return Scene(tuple(Obj(shape, colour, size, p) for p in cells), bg)
    while True:
        a = Obj(_choice(rng, SHAPES), _choice(rng, COLOURS), _choice(rng, SIZES),
                _choice(rng, POSITIONS))
        b = Obj(_choice(rng, SHAPES), _choice(rng, COLOURS), _choice(rng, SIZES),
                _choice(rng, POSITIONS))
        if (a.shape, a.colour, a.size) != (b.shape, b.colour, b.size) and a.position != b.position:
            break
    if rng.random() < 0.5:  # move b into a's row or column
        (ra, ca), (rb, cb) = cell(a.position), cell(b.position)
        if rng.random() < 0.5 and ra != rb:
            b = replace(b, position=POSITIONS[3 * rb + ca])
        elif ca != cb:
            b = replace(b, position=POSITIONS[3 * ra + cb])
    return Scene((a, b), bg)


def groups_of(scene: Scene) -> list[tuple[Obj, list[str]]]:
    """Objects grouped by (shape, colour, size), in first-seen order: [(prototype, cells)]."""
    out: dict[tuple, list[str]] = {}
    protos: dict[tuple, Obj] = {}
    for o in scene.objects:
        k = (o.shape, o.colour, o.size)
        protos.setdefault(k, o)
        out.setdefault(k, []).append(o.position)
    return [(protos[k], cells) for k, cells in out.items()]


def _describes(g: Group, kind: tuple[str, str, str]) -> bool:
    return all(asked in (None, have) for asked, have in zip((g.shape, g.colour, g.size), kind))


def scene_for_request(req: Request, rng: np.random.Generator) -> Scene:
    """A scene satisfying everything `req` asks, unspecified attributes drawn at random."""
    if not req.groups:
        raise DistarError("the caption names no object of the mini world (shapes: "
                          f"{', '.join(SHAPES)}; colours: {', '.join(COLOURS)}); write e.g. "
                          "'a red circle' or 'two blue squares on the left'.")
    total = sum(g.count for g in req.groups)
    if total > MAX_OBJECTS:
        raise DistarError(f"the caption asks for {total} objects; the mini world holds at most "
                          f"{MAX_OBJECTS}.")
    # No group's description may match another group's objects ("a triangle and a red
    # triangle": the first must not be red), or the scene would hold the wrong count.
    for _ in range(200):
        kinds = [(g.shape or _choice(rng, SHAPES), g.colour or _choice(rng, COLOURS),
                  g.size or _choice(rng, SIZES)) for g in req.groups]
        if not any(i != j and _describes(g, kinds[j])
                   for i, g in enumerate(req.groups) for j in range(len(kinds))):
            break
    else:
        raise DistarError("the caption describes one group of objects inside another (e.g. "
                          "'a circle and a red circle'); make the descriptions disjoint or merge "
                          "them into one count (e.g. 'two red circles').")
    for _ in range(500):  # rejection sampling over cell assignments: at most 9P3 = 504 cases
        used: list[str] = []
        cells_per_group = []
        for g in req.groups:
            allowed = [p for p in (region_cells(g.position) if g.position else POSITIONS)
                       if p not in used]
            if len(allowed) < g.count:
                break
            chosen = [allowed[i] for i in rng.permutation(len(allowed))[:g.count]]
            used += chosen
            cells_per_group.append(chosen)
        else:
            if req.relation and len(req.groups) >= 2 and not all(
                    relation_holds(a, b, req.relation)
                    for a in cells_per_group[0] for b in cells_per_group[1]):
                continue
            objs = tuple(Obj(s, c, z, p) for (s, c, z), cells in zip(kinds, cells_per_group)
                         for p in cells)
            return Scene(objs, req.background or _choice(rng, BACKGROUNDS))
    raise DistarError(f"no placement on the 3x3 grid satisfies the caption ({req}); ask for "
                      "fewer objects in that region.")


# Rendering -------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _background(name: str, size: int) -> Image.Image:
    if name == "gradient":
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        top, bottom = (np.array(c, np.float32) for c in GRADIENT)
        arr = np.broadcast_to((1 - t) * top + t * bottom, (size, size, 3))
        return Image.fromarray(np.round(arr).astype(np.uint8))
    return Image.new("RGB", (size, size), BACKGROUND_RGB[name])


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    if shape == "square":
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
        pts = [(x * 0.9, y * 0.9) for x, y in pts]  # a square's area would dwarf a circle's
    elif shape == "triangle":
        pts = [(0, -r), (r * 0.95, r * 0.75), (-r * 0.95, r * 0.75)]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else r * 0.45) * np.sin(np.pi * k / 5),
                -(r if k % 2 == 0 else r * 0.45) * np.cos(np.pi * k / 5)) for k in range(10)]
    elif shape == "cross":
        r, w = r * 0.9, r * 0.34
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
               (-r, w), (-r, -w), (-w, -w)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def render(scene: Scene, rng: np.random.Generator | None = None) -> Image.Image:
    """The scene as a 64x64 RGB image. With `rng`, centres, radii, rotations and colours are
    jittered (draws from rng in a fixed order); without it, the canonical rendering."""
    k = SUPERSAMPLE
    img = _background(scene.background, IMAGE_SIZE * k).copy()
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        row, col = cell(o.position)
        cx, cy, r = CELL_CENTRES[col], CELL_CENTRES[row], RADIUS[o.size]
        rgb, angle = PALETTE[o.colour], 0.0
        if rng is not None:
            dx, dy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, 2)
            cx, cy = cx + dx, cy + dy
            r *= rng.uniform(0.95, 1.05)
            angle = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
            rgb = tuple(int(np.clip(v + j, 0, 255))
                        for v, j in zip(rgb, rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)))
        if o.shape == "circle":
            draw.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=rgb)
        else:
            draw.polygon([(x * k, y * k) for x, y in _polygon(o.shape, cx, cy, r, angle)],
                         fill=rgb)
    return img.reduce(k)  # box filter: the anti-aliasing


# Captions ----------------------------------------------------------------------------------------
SHAPE_WORDS = {"circle": [("circle", "circles"), ("disc", "discs"), ("round dot", "round dots")],
               "square": [("square", "squares"), ("box", "boxes")],
               "triangle": [("triangle", "triangles")],
               "star": [("star", "stars")],
               "cross": [("cross", "crosses"), ("plus sign", "plus signs")]}
COLOUR_WORDS = {"red": ["red", "crimson"], "orange": ["orange"], "yellow": ["yellow", "golden"],
                "green": ["green", "emerald"], "blue": ["blue", "azure"],
                "purple": ["purple", "violet"]}
SIZE_WORDS = {"small": ["small", "tiny", "little"], "large": ["large", "big", "huge"]}
COUNT_WORDS = {1: ["a", "a", "a", "one"], 2: ["two", "2", "a pair of"], 3: ["three", "3"]}
REGION_PHRASES = {
    "centre": ["in the centre", "in the center", "in the middle"],
    "left": ["on the left", "at the left"], "right": ["on the right", "at the right"],
    "top": ["at the top", "near the top"], "bottom": ["at the bottom", "near the bottom"],
    "top left": ["in the top left corner", "at the top left", "in the upper left corner"],
    "top right": ["in the top right corner", "at the top right", "in the upper right corner"],
    "bottom left": ["in the bottom left corner", "at the bottom left",
                    "in the lower left corner"],
    "bottom right": ["in the bottom right corner", "at the bottom right",
                     "in the lower right corner"]}
RELATION_WORDS = {"above": ["above", "over"], "below": ["below", "under", "beneath"],
                  "left of": ["to the left of", "left of"],
                  "right of": ["to the right of", "right of"]}
BACKGROUND_PHRASES = {"white": ["on a white background", "on white"],
                      "black": ["on a black background", "on black"],
                      "grey": ["on a grey background", "on a gray background"],
                      "gradient": ["on a gradient background", "on a sky gradient"]}
PREFIXES = ["", "", "", "a picture of ", "an image of ", "a drawing of "]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def single_object_prompts(paraphrased: bool = False) -> list[str]:
    """The 30 colour x shape prompts ('a red circle', ...): the probes of prompt faithfulness
    (attribute accuracy of a model's samples, a CLIP's zero-shot shape and colour). Paraphrased:
    the same 30 asked with each word's last synonym and a prefix ('an image of a crimson round
    dot'), to tell a model that learned the attributes from one that learned these 30 texts."""
    if not paraphrased:
        return [f"{article(c)} {c} {s}" for s in SHAPES for c in COLOURS]
    words = [(COLOUR_WORDS[c][-1], SHAPE_WORDS[s][-1][0]) for s in SHAPES for c in COLOURS]
    return [f"an image of {article(c)} {c} {s}" for c, s in words]


def _regions_containing(cells: list[str]) -> list[str]:
    """Region names true of every cell in `cells`."""
    return [g for g in POSITIONS if all(in_region(c, g) for c in cells)]


def describe_group(g: Group, rng: np.random.Generator) -> str:
    """One noun phrase for a group, synonyms drawn from rng."""
    singular, plural = _choice(rng, SHAPE_WORDS[g.shape]) if g.shape else ("shape", "shapes")
    words = []
    if g.size:
        words.append(_choice(rng, SIZE_WORDS[g.size]))
    if g.colour:
        words.append(_choice(rng, COLOUR_WORDS[g.colour]))
    words.append(singular if g.count == 1 else plural)
    count = _choice(rng, COUNT_WORDS[g.count])
    if count == "a":
        count = article(words[0])
    text = f"{count} {' '.join(words)}"
    if g.position:
        text += " " + _choice(rng, REGION_PHRASES[g.position])
    return text


def request_text(req: Request, rng: np.random.Generator) -> str:
    """A caption asking exactly for `req` (the inverse of parse_caption)."""
    phrases = [describe_group(g, rng) for g in req.groups]
    if req.relation and len(phrases) == 2:
        body = f"{phrases[0]} {_choice(rng, RELATION_WORDS[req.relation])} {phrases[1]}"
    else:
        body = " and ".join(phrases)
    if req.background:
        body += " " + _choice(rng, BACKGROUND_PHRASES[req.background])
    return _choice(rng, PREFIXES) + body


def caption_request(scene: Scene, rng: np.random.Generator) -> Request:
    """A true description of the scene, some attributes left unsaid (drawn from rng)."""
    groups = groups_of(scene)
    relation = None
    if len(groups) == 2 and all(len(c) == 1 for _, c in groups) and rng.random() < 0.7:
        a, b = groups[0][1][0], groups[1][1][0]
        true = [r for r in RELATIONS if relation_holds(a, b, r)]
        relation = _choice(rng, true)
    out = []
    for proto, cells in groups:
        regions = _regions_containing(cells)
        p_pos = 0.0 if relation else (0.6 if len(groups) == 1 else 0.3)
        colour = proto.colour if rng.random() < 0.92 else None
        size = proto.size if rng.random() < 0.5 else None
        matching = [o for o in scene.objects if o.shape == proto.shape
                    and colour in (None, o.colour) and size in (None, o.size)]
        if len(matching) != len(cells):  # an attribute left unsaid would make it ambiguous
            colour, size = proto.colour, proto.size
        out.append(Group(
            shape=proto.shape, colour=colour, size=size, count=len(cells),
            position=_choice(rng, regions) if regions and rng.random() < p_pos else None))
    return Request(tuple(out), relation, scene.background if rng.random() < 0.35 else None)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of the scene: templates + synonyms, true of the scene, not always complete.
    Never one of the held-out benchmark prompts (`held_out_prompts`): those are redrawn."""
    held_out = _held_out_texts()
    while True:
        text = request_text(caption_request(scene, rng), rng)
        if text not in held_out:
            return text


# Held-out prompts (the mini_parti benchmark) -------------------------------------------------
HELD_OUT_SEED = 20_241_129
CHALLENGES = ("colour", "counting", "spatial", "shape", "composition")
HELD_OUT_PER_CHALLENGE = 60
CATEGORY = {"circle": "Circles", "square": "Squares", "triangle": "Triangles", "star": "Stars",
            "cross": "Crosses"}


def _random_group(rng, *, count=1, shape=None, colour=None, size=True, position=None) -> Group:
    return Group(shape or _choice(rng, SHAPES), colour or _choice(rng, COLOURS),
                 _choice(rng, SIZES) if size is True else size, count, position)


def _challenge_request(challenge: str, rng: np.random.Generator) -> Request:
    """One prompt's request for a challenge, as Parti's challenges probe one skill each."""
    bg = _choice(rng, BACKGROUNDS) if rng.random() < 0.3 else None
    maybe_size = lambda: True if rng.random() < 0.5 else None
    if challenge == "colour":      # one object, its colour the point
        return Request((_random_group(rng, size=maybe_size()),), None, bg)
    if challenge == "counting":    # 2 or 3 alike, sometimes on one side
        n = int(rng.integers(2, MAX_OBJECTS + 1))
        side = _choice(rng, ("left", "right", "top", "bottom")) if rng.random() < 0.3 else None
        return Request((_random_group(rng, count=n, size=maybe_size(), position=side),), None, bg)
    if challenge == "spatial":     # a relation, or one object in a named region
        if rng.random() < 0.6:
            a, b = _random_group(rng, size=maybe_size()), _random_group(rng, size=maybe_size())
            return Request((a, b), _choice(rng, RELATIONS), bg)
        return Request((_random_group(rng, size=maybe_size(),
                                      position=_choice(rng, POSITIONS)),), None, bg)
    if challenge == "shape":       # two shapes of one colour: the shapes tell them apart
        colour = _choice(rng, COLOURS)
        s1, s2 = (SHAPES[i] for i in rng.permutation(len(SHAPES))[:2])
        return Request((_random_group(rng, shape=s1, colour=colour, size=None),
                        _random_group(rng, shape=s2, colour=colour, size=None)), None, bg)
    if challenge == "composition":  # a count and a different object: 3 objects, bound attributes
        g1 = _random_group(rng, count=2, size=None)
        g2 = _random_group(rng, size=maybe_size())
        return Request((g1, g2), None, bg)
    raise ValueError(f"unknown challenge {challenge!r}")


@lru_cache(maxsize=1)
def held_out_prompts() -> tuple[tuple[str, str, str], ...]:
    """(text, category, challenge) of the mini_parti benchmark: HELD_OUT_PER_CHALLENGE distinct
    renderable prompts per challenge; category = the first object's shape, as Parti's category
    is the subject. Training captions never equal any of these texts (see `caption`)."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    out, seen = [], set()
    for challenge in CHALLENGES:
        made = 0
        while made < HELD_OUT_PER_CHALLENGE:
            req = _challenge_request(challenge, rng)
            if any(i != j and _describes(g, (h.shape, h.colour, h.size or "small"))
                   and _describes(g, (h.shape, h.colour, h.size or "large"))
                   for i, g in enumerate(req.groups) for j, h in enumerate(req.groups)):
                continue  # one group's words would also describe the other's objects
            text = request_text(req, rng)
            if text in seen or parse_caption(text) != req:
                continue
            try:
                scene_for_request(req, np.random.default_rng(0))
            except DistarError:
                continue
            seen.add(text)
            out.append((text, CATEGORY[req.groups[0].shape], challenge))
            made += 1
    return tuple(out)


@lru_cache(maxsize=1)
def _held_out_texts() -> frozenset[str]:
    return frozenset(t for t, _, _ in held_out_prompts())


def in_distribution_prompts(n: int, seed: int) -> list[str]:
    """Captions of fresh random scenes (the mini_coco benchmark): the training distribution."""
    return [caption(sample_scene(rng), rng)
            for rng in (np.random.default_rng([seed, i, 3]) for i in range(n))]


HPS_STYLE_SIZES = {"white": 160, "black": 120, "grey": 80, "gradient": 40}


@lru_cache(maxsize=1)
def style_prompts() -> tuple[tuple[str, str], ...]:
    """(text, style) of the mini_hps benchmark: 4 background styles of unequal sizes, as HPSv2's
    benchmark has 4 styles; every prompt names its style's background."""
    out = []
    for style, size in HPS_STYLE_SIZES.items():
        rng = np.random.default_rng([HELD_OUT_SEED, BACKGROUNDS.index(style)])
        seen: set[str] = set()
        while len(seen) < size:
            scene = replace(sample_scene(rng), background=style)
            req = replace(caption_request(scene, rng), background=style)
            text = request_text(req, rng)
            if text not in seen:
                seen.add(text)
                out.append((text, style))
    return tuple(out)


# Parsing -----------------------------------------------------------------------------------------
def _phrase_table() -> list[tuple[str, str]]:
    """(phrase, token) pairs, longest phrase first so 'to the left of' wins over 'left'."""
    table = []
    for rel, ws in RELATION_WORDS.items():
        table += [(w, f"REL:{rel}") for w in ws]
    for bg, ws in BACKGROUND_PHRASES.items():
        table += [(w, f"BG:{bg}") for w in ws]
    for reg, ws in REGION_PHRASES.items():
        table += [(w, f"POS:{reg}") for w in ws]
    for shape, ws in SHAPE_WORDS.items():
        for s, p in ws:
            table += [(s, f"SHAPE:{shape}:1"), (p, f"SHAPE:{shape}:n")]
    for colour, ws in COLOUR_WORDS.items():
        table += [(w, f"COLOUR:{colour}") for w in ws]
    for size, ws in SIZE_WORDS.items():
        table += [(w, f"SIZE:{size}") for w in ws]
    for n, ws in COUNT_WORDS.items():
        table += [(w, f"COUNT:{n}") for w in ws]
    table += [(p.strip(), "IGNORE") for p in PREFIXES if p]
    table += [("an", "COUNT:1"), ("shapes", "SHAPE:-:n"), ("shape", "SHAPE:-:1"),
              ("objects", "SHAPE:-:n"), ("object", "SHAPE:-:1"),
              ("centre", "POS:centre"), ("center", "POS:centre"), ("and", "AND")]
    return sorted(table, key=lambda pw: -len(pw[0]))


_PHRASES = _phrase_table()
_PHRASE_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in _PHRASES) + r")\b")
_TOKEN = dict(_PHRASES)


def parse_caption(text: str) -> Request:
    """What a caption asks for. Words outside the grammar are ignored; a caption naming nothing
    of the mini world gives an empty Request (`.empty`)."""
    tokens = [_TOKEN[m.group(1)] for m in _PHRASE_RE.finditer(text.lower())]
    background = next((t.split(":", 1)[1] for t in tokens if t.startswith("BG:")), None)
    relation = None
    segments: list[list[str]] = [[]]
    for t in tokens:
        if t.startswith("REL:") and relation is None:
            relation = t.split(":", 1)[1]
            segments.append([])
        elif t == "AND":
            segments.append([])
        elif not t.startswith("BG:") and t != "IGNORE":
            segments[-1].append(t)
    groups = []
    for seg in segments:
        fields: dict = {}
        named = False
        for t in seg:
            kind, _, val = t.partition(":")
            if kind == "SHAPE":
                shape, _, number = val.partition(":")
                named = True
                if shape != "-":
                    fields.setdefault("shape", shape)
                if number == "n":
                    fields.setdefault("plural", True)
            elif kind == "COLOUR":
                fields.setdefault("colour", val)
            elif kind == "SIZE":
                fields.setdefault("size", val)
            elif kind == "COUNT":
                fields.setdefault("count", int(val))
            elif kind == "POS":
                fields.setdefault("position", val)
        if not named and "colour" not in fields:
            continue  # "and" inside a background phrase, stray words: nothing asked here
        count = fields.get("count", 2 if fields.get("plural") else 1)
        groups.append(Group(fields.get("shape"), fields.get("colour"), fields.get("size"),
                            count, fields.get("position")))
    if len(groups) < 2:
        relation = None
    return Request(tuple(groups), relation, background)


def render_for_caption(text: str, rng: np.random.Generator) -> Image.Image:
    """The ground-truth sampler: a real image of the mini world that satisfies the caption."""
    return render(scene_for_request(parse_caption(text), rng), rng)


def training_pairs(n: int, seed: int) -> list[tuple[Image.Image, str]]:
    """n (image, caption) pairs; item i is a pure function of (seed, i)."""
    return [training_pair(seed, i) for i in range(n)]


def training_pair(seed: int, i: int) -> tuple[Image.Image, str]:
    rng = np.random.default_rng([seed, i])
    scene = sample_scene(rng)
    return render(scene, rng), caption(scene, rng)


def training_scene(seed: int, i: int) -> Scene:
    """The scene drawn in training_pair(seed, i) (its generator's first draws): the renderer's
    own labels for that image, which its caption may only partly state."""
    return sample_scene(np.random.default_rng([seed, i]))
