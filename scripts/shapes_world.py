# The synthetic "shapes world" the demo model learns: scenes of circles, squares
# and triangles in four colours on varied, noisy backgrounds, with the caption
# and the question/answer pairs each scene determines. Pure numpy + PIL, seeded
# by the caller's numpy Generator, so the same seed draws the same scenes.
#
# A scene is one of two kinds:
#   pair   two different objects side by side in one row, or one above the
#          other in one column: "a red circle to the left of a blue square",
#          "a green triangle above a yellow circle" (the left / upper one first);
#   group  one to four copies of one object: "a red circle", "three blue squares".
# Questions (each has exactly one right answer in the scene):
#   "how many <shape>s are there?"          -> zero ... four
#   "what colour is the <shape>?"           -> red / green / blue / yellow  (only
#                                              when every <shape> has one colour)
#   "what shape is the <colour> object?"    -> circle / square / triangle (likewise)
#   "is there a <colour> <shape>?"          -> yes / no
import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (215, 40, 40), "green": (35, 160, 60), "blue": (40, 75, 215), "yellow": (230, 195, 25)}
NUMBERS = ["zero", "one", "two", "three", "four"]
GRID = 3  # objects sit in the cells of a 3x3 grid, jittered inside their cell


def plural(shape):
    return shape + "s"


def phrase(obj):
    colour, shape = obj
    return f"a {colour} {shape}"


def draw_scene(rng, size):
    """Draws one scene: (image as uint8 HxWx3, scene dict with its objects and caption)."""
    kind = "pair" if rng.random() < 0.5 else "group"
    cells = []
    if kind == "pair":
        while True:
            a = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
            b = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
            if a != b:
                break
        line = int(rng.integers(GRID))
        first, second = sorted(rng.choice(GRID, size=2, replace=False).tolist())
        horizontal = rng.random() < 0.5
        if horizontal:
            cells = [(line, first), (line, second)]
            caption = f"{phrase(a)} to the left of {phrase(b)}"
        else:
            cells = [(first, line), (second, line)]
            caption = f"{phrase(a)} above {phrase(b)}"
        objects = [a, b]
    else:
        count = int(rng.integers(1, 5))
        obj = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        flat = rng.choice(GRID * GRID, size=count, replace=False).tolist()
        cells = [(c // GRID, c % GRID) for c in flat]
        objects = [obj] * count
        caption = phrase(obj) if count == 1 else f"{NUMBERS[count]} {obj[0]} {plural(obj[1])}"

    # A light or mid-tone background with a faint tint and a gentle gradient, then the objects,
    # then noise. (A strong tint makes "red" on a red-pink ground a matter of taste.)
    base = rng.uniform(130, 240) + rng.uniform(-20, 20, size=3)
    ramp = np.linspace(-1, 1, size)[None, :, None] * rng.uniform(-20, 20, size=3)
    if rng.random() < 0.5:
        ramp = ramp.transpose(1, 0, 2)
    canvas = Image.fromarray(np.clip(base + ramp + np.zeros((size, size, 3)), 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(canvas)
    cell = size / GRID
    for (row, col), (colour, shape) in zip(cells, objects):
        extent = rng.uniform(0.45, 0.8) * cell
        cx = (col + 0.5) * cell + rng.uniform(-1, 1) * (cell - extent) / 2
        cy = (row + 0.5) * cell + rng.uniform(-1, 1) * (cell - extent) / 2
        fill = tuple(int(np.clip(v + rng.uniform(-25, 25), 0, 255)) for v in COLOURS[colour])
        h = extent / 2
        if shape == "circle":
            pen.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif shape == "square":
            pen.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        else:
            pen.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=fill)
    pixels = np.asarray(canvas).astype(np.float32) + rng.normal(0, 6, size=(size, size, 3))
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return image, {"kind": kind, "objects": [list(o) for o in objects], "cells": [list(c) for c in cells],
                   "caption": caption}


def questions(rng, scene, count, distinct=True):
    """`count` question/answer pairs about the scene, of varied kinds, all different unless
    `distinct` is false (as the demo model's tokenizer corpus was drawn)."""
    objects = [tuple(o) for o in scene["objects"]]
    out = []
    while len(out) < count:
        kind = rng.choice(["count", "colour", "shape", "exists"])
        present_shapes = sorted({s for _, s in objects})
        present_colours = sorted({c for c, _ in objects})
        if kind == "count":
            shape = str(rng.choice(present_shapes if rng.random() < 0.7 else SHAPES))
            n = sum(1 for _, s in objects if s == shape)
            out.append((f"how many {plural(shape)} are there?", NUMBERS[n]))
        elif kind == "colour":
            shape = str(rng.choice(present_shapes))
            colours = {c for c, s in objects if s == shape}
            if len(colours) == 1:
                out.append((f"what colour is the {shape}?", colours.pop()))
        elif kind == "shape":
            colour = str(rng.choice(present_colours))
            shapes = {s for c, s in objects if c == colour}
            if len(shapes) == 1:
                out.append((f"what shape is the {colour} object?", shapes.pop()))
        else:
            if rng.random() < 0.5:
                colour, shape = objects[int(rng.integers(len(objects)))]
            else:
                colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
            answer = "yes" if (colour, shape) in objects else "no"
            out.append((f"is there a {colour} {shape}?", answer))
        if distinct and len(out) != len(set(out)):
            out.pop()  # asked already
    return out


def corpus(rng, scenes):
    """Every sentence the model reads or writes, for training the tokenizer."""
    lines = []
    for _ in range(scenes):
        _, scene = draw_scene(rng, 24)
        lines.append(scene["caption"])
        for q, a in questions(rng, scene, 4, distinct=False):
            lines.append(f"Question: {q} Answer: {a}")
    return lines
