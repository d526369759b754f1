"""Procedural street scenes (RGB image + Cityscapes labelIds) for the built-in synthetic sample.

A pinhole camera looks along a straight road over a flat ground plane. Road, sidewalks, verges
and terrain are bands of that plane; facades are vertical planes beside it; cars, people, poles
(with signs and traffic lights), trees and street furniture stand on it. Everything is placed in
metres and projected, so objects shrink towards the vanishing point. Surfaces get per-class base
colours modulated by real photo textures shipped with scikit-image (gravel, brick, grass, moon),
then the domain's colour balance, noise and a slight blur. Labels stay crisp.

A :class:`Style` describes one domain (a dense city or a rural road); :func:`with_isp` puts
one style's scene through another's colour pipeline (a city in KITTI-like colours);
:func:`render_scene` draws one frame from a :class:`numpy.random.Generator`. Pure
numpy/OpenCV, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from domain_gap.labels import NAME_TO_ID

ROAD = NAME_TO_ID["road"]
SIDEWALK = NAME_TO_ID["sidewalk"]
BUILDING = NAME_TO_ID["building"]
POLE = NAME_TO_ID["pole"]
LIGHT = NAME_TO_ID["traffic light"]
SIGN = NAME_TO_ID["traffic sign"]
VEGETATION = NAME_TO_ID["vegetation"]
TERRAIN = NAME_TO_ID["terrain"]
SKY = NAME_TO_ID["sky"]
PERSON = NAME_TO_ID["person"]
CAR = NAME_TO_ID["car"]
EGO = NAME_TO_ID["ego vehicle"]
STATIC = NAME_TO_ID["static"]
GROUND = NAME_TO_ID["ground"]

# Texture slots: which photo texture modulates a pixel (0 = smooth surface).
FLAT, ROAD_TEX, PAVING_TEX, GRASS_GROUND_TEX, BRICK_TEX, LEAF_TEX, CLOUD_TEX, ROUGH_TEX = range(8)
_N_TEX = 8

_COORD_LIMIT = 30000  # OpenCV drawing works in 16.16 fixed point; keep coordinates far inside.

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Style:
    """What one synthetic domain looks like: scene content, camera and colour balance."""

    name: str
    building_prob: float  # chance that a side of the road is lined with facades
    sidewalk_prob: float  # chance that a side has a sidewalk
    verge_prob: float  # chance of a grass verge between road and sidewalk / field
    trees_per_side: tuple[int, int]
    forest_prob: float  # chance that an open side is a forest edge (many large trees)
    cars: tuple[int, int]
    persons: tuple[int, int]
    poles: tuple[int, int]
    sign_prob: float
    light_prob: float
    statics: tuple[int, int]
    ground_patch_prob: float
    ego_hood: bool
    horizon: tuple[float, float]  # horizon row as a fraction of the height
    focal: float  # focal length as a fraction of the width
    cam_height: float  # metres
    road_half: tuple[float, float]  # metres from the camera to each road edge
    clear_sky_prob: float
    shadow_prob: float
    facade_colors: tuple[Color, ...]
    terrain_colors: tuple[Color, ...]
    vegetation_colors: tuple[Color, ...]
    gains: Color  # per-channel colour balance
    brightness: float  # added after the gains
    contrast: float  # around mid grey
    saturation: float
    noise: float  # per-pixel Gaussian noise (0..1 scale)
    blur: float  # Gaussian sigma in pixels


CITY = Style(
    name="city",
    building_prob=0.9,
    sidewalk_prob=0.95,
    verge_prob=0.25,
    trees_per_side=(0, 3),
    forest_prob=0.0,
    cars=(2, 6),
    persons=(2, 6),
    poles=(2, 5),
    sign_prob=0.55,
    light_prob=0.4,
    statics=(0, 3),
    ground_patch_prob=0.3,
    ego_hood=True,
    horizon=(0.40, 0.47),
    focal=1.1,
    cam_height=1.3,
    road_half=(3.5, 8.0),
    clear_sky_prob=0.25,
    shadow_prob=0.3,
    facade_colors=(
        (0.62, 0.56, 0.47),
        (0.50, 0.50, 0.50),
        (0.68, 0.66, 0.63),
        (0.55, 0.36, 0.29),
        (0.70, 0.58, 0.40),
        (0.78, 0.76, 0.72),
        (0.38, 0.36, 0.35),
    ),
    terrain_colors=((0.42, 0.48, 0.27), (0.48, 0.46, 0.33), (0.38, 0.45, 0.25)),
    vegetation_colors=((0.20, 0.31, 0.13), (0.25, 0.37, 0.16), (0.16, 0.25, 0.11)),
    gains=(0.97, 1.0, 1.03),
    brightness=-0.02,
    contrast=0.9,
    saturation=0.8,
    noise=0.015,
    blur=0.6,
)
"""Cityscapes-like: dense city, facades on both sides, many cars and people, overcast, muted."""

RURAL = Style(
    name="rural",
    building_prob=0.22,
    sidewalk_prob=0.35,
    verge_prob=0.8,
    trees_per_side=(3, 9),
    forest_prob=0.55,
    cars=(0, 3),
    persons=(0, 2),
    poles=(1, 3),
    sign_prob=0.6,
    light_prob=0.25,
    statics=(0, 2),
    ground_patch_prob=0.35,
    ego_hood=False,
    horizon=(0.40, 0.50),
    focal=0.58,
    cam_height=1.65,
    road_half=(3.0, 5.0),
    clear_sky_prob=0.75,
    shadow_prob=0.7,
    facade_colors=(
        (0.82, 0.80, 0.74),
        (0.74, 0.66, 0.50),
        (0.60, 0.42, 0.33),
        (0.66, 0.66, 0.64),
    ),
    terrain_colors=((0.55, 0.55, 0.30), (0.58, 0.50, 0.34), (0.47, 0.52, 0.28)),
    vegetation_colors=((0.22, 0.34, 0.12), (0.30, 0.40, 0.16), (0.18, 0.28, 0.10)),
    gains=(1.10, 1.03, 0.80),
    brightness=0.07,
    contrast=1.25,
    saturation=1.2,
    noise=0.02,
    blur=0.9,
)
"""KITTI-like: rural road, much vegetation and terrain, few buildings, sunny, warm and bright."""

ISP_FIELDS = ("gains", "brightness", "contrast", "saturation", "noise", "blur")
"""The :class:`Style` fields of the camera's colour pipeline: colour balance, tone curve,
saturation, sensor noise and optical blur. Every other field is scene content or geometry."""


def with_isp(content: Style, look: Style, name: str) -> Style:
    """``content``'s scene (layout, objects, camera, weather) through ``look``'s colour pipeline.

    Keeps the two kinds of domain shift apart: what is in front of the camera versus how the
    camera renders it (:data:`ISP_FIELDS`).
    """
    return replace(content, name=name, **{f: getattr(look, f) for f in ISP_FIELDS})


URBAN_KITTI = replace(with_isp(CITY, RURAL, "urban-kitti"), ego_hood=False)
"""A Cityscapes-like city (same layout, class mix, camera and weather as :data:`CITY`) in the
KITTI-like colours of :data:`RURAL`; no ego-vehicle hood, which only Cityscapes' camera sees."""


def vary_style(style: Style, rng: np.random.Generator, amount: float = 1.0) -> Style:
    """A mild per-city variant of ``style`` (colour balance, density of content)."""
    g = np.asarray(style.gains) * (1.0 + rng.uniform(-0.035, 0.035, 3) * amount)
    return replace(
        style,
        gains=(float(g[0]), float(g[1]), float(g[2])),
        brightness=style.brightness + float(rng.uniform(-0.03, 0.03)) * amount,
        contrast=style.contrast * (1.0 + float(rng.uniform(-0.06, 0.06)) * amount),
        saturation=style.saturation * (1.0 + float(rng.uniform(-0.1, 0.1)) * amount),
        building_prob=float(np.clip(style.building_prob + rng.uniform(-0.1, 0.05) * amount, 0, 1)),
        clear_sky_prob=float(np.clip(style.clear_sky_prob + rng.uniform(-0.15, 0.15), 0, 1)),
    )


@lru_cache(maxsize=1)
def _textures() -> dict[str, np.ndarray]:
    """High-passed, unit-variance float32 photo textures from scikit-image's bundled images."""
    from skimage import data

    out = {}
    for name in ("gravel", "brick", "grass", "moon"):
        img = getattr(data, name)().astype(np.float32)
        img -= cv2.GaussianBlur(img, (0, 0), 24)
        img /= img.std() + 1e-6
        out[name] = np.clip(img, -3, 3)
    return out


@dataclass
class _Camera:
    h: int
    w: int
    y_h: float  # horizon row
    x_v: float  # vanishing point column
    f: float  # focal length in pixels
    hc: float  # camera height in metres

    def project(self, x: np.ndarray, z: np.ndarray, height: np.ndarray | float = 0.0):
        """Image (column, row) of ground-relative points (lateral x, depth z, height)."""
        x, z = np.asarray(x, float), np.asarray(z, float)
        s = self.f / z
        return self.x_v + x * s, self.y_h + (self.hc - np.asarray(height, float)) * s

    def scale(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.f / z

    @property
    def z_bottom(self) -> float:
        """Depth of the ground seen at the bottom image row."""
        return self.hc * self.f / (self.h - self.y_h)


class _Canvas:
    """Label map, albedo and texture-slot map drawn together (painter's algorithm)."""

    def __init__(self, h: int, w: int) -> None:
        self.label = np.zeros((h, w), np.uint8)
        self.albedo = np.zeros((h, w, 3), np.float32)
        self.tex = np.zeros((h, w), np.uint8)
        self.shade = np.ones((h, w), np.float32)

    @staticmethod
    def _pts(pts) -> list[np.ndarray]:
        """One polygon (K, 2) or a batch (N, K, 2) as OpenCV int32 point lists."""
        p = np.clip(np.round(np.asarray(pts, float)), -_COORD_LIMIT, _COORD_LIMIT).astype(np.int32)
        return list(p) if p.ndim == 3 else [p.reshape(-1, 2)]

    def poly(self, pts, label: int | None, color: Color, tex: int = FLAT) -> None:
        """Fill a polygon; ``label=None`` paints colour/texture only (details on a surface)."""
        p = self._pts(pts)
        if label is not None:
            cv2.fillPoly(self.label, p, int(label))
        cv2.fillPoly(self.albedo, p, tuple(float(c) for c in color))
        cv2.fillPoly(self.tex, p, int(tex))

    def rect(self, x0, y0, x1, y1, label: int | None, color: Color, tex: int = FLAT) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label, color, tex)

    def ellipse(self, cx, cy, rx, ry, label: int | None, color: Color, tex: int = FLAT) -> None:
        c = (_coord(cx), _coord(cy))
        ax = (max(1, _coord(rx)), max(1, _coord(ry)))
        if label is not None:
            cv2.ellipse(self.label, c, ax, 0, 0, 360, int(label), -1)
        cv2.ellipse(self.albedo, c, ax, 0, 0, 360, tuple(float(v) for v in color), -1)
        cv2.ellipse(self.tex, c, ax, 0, 0, 360, int(tex), -1)

    def darken(self, pts, factor: float) -> None:
        """Cast shadow: scale the light of a polygon by ``factor`` (labels unchanged)."""
        mask = np.zeros(self.shade.shape, np.uint8)
        cv2.fillPoly(mask, self._pts(pts), 1)
        self.shade[mask.astype(bool)] *= factor


def _coord(v: float) -> int:
    return round(float(np.clip(v, -_COORD_LIMIT, _COORD_LIMIT)))


def _jitter(rng: np.random.Generator, color: Color, amount: float = 0.04) -> Color:
    c = np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def _pick(rng: np.random.Generator, colors) -> Color:
    return colors[int(rng.integers(len(colors)))]


def _per_side(rng: np.random.Generator, span: tuple[int, int], extra: float) -> int:
    """One side's share of a per-frame count range: about half, plus one with prob. ``extra``."""
    return int(rng.integers(span[0], span[1] + 1)) // 2 + int(rng.random() < extra)


def _band(cam: _Camera, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    """Image polygon of the ground rectangle x0..x1 (lateral) x z0..z1 (depth)."""
    xs = np.array([x0, x1, x1, x0])
    zs = np.array([z0, z0, z1, z1])
    u, v = cam.project(xs, zs)
    return np.stack([u, v], 1)


def _thin(cam: _Camera, metres: float, z: float, minimum: int) -> float:
    """Width in pixels of a thin part, never below ``minimum`` pixels."""
    return max(float(minimum), metres * cam.scale(z))


class _Scene:
    """Builds one frame: layout in metres, drawn back to front onto a :class:`_Canvas`."""

    def __init__(self, style: Style, h: int, w: int, rng: np.random.Generator) -> None:
        self.s, self.rng = style, rng
        self.cam = _Camera(
            h=h,
            w=w,
            y_h=h * rng.uniform(*style.horizon),
            x_v=w * (0.5 + rng.uniform(-0.07, 0.07)),
            f=w * style.focal * rng.uniform(0.95, 1.05),
            hc=style.cam_height * rng.uniform(0.95, 1.05),
        )
        self.c = _Canvas(h, w)
        # Thin classes (poles, signs, lights) scale with the image, never a single pixel.
        self.min_thin = max(3, round(w / 170))
        self.z_near = max(self.cam.z_bottom, 1.5)
        self.z_far = 250.0
        self.objects: list[tuple[float, Callable[[], None]]] = []  # (depth, draw)

    # ------------------------------------------------------------------ layout
    def build(self) -> None:
        s, rng = self.s, self.rng
        self.road_l = -rng.uniform(*s.road_half)
        self.road_r = rng.uniform(*s.road_half)
        self.clear = rng.random() < s.clear_sky_prob
        self._sky()
        sides = [self._side_layout(-1), self._side_layout(+1)]
        self._skyline(urban=any(side["building"] for side in sides))
        self._ground(sides)
        for side in sides:
            if side["building"]:
                self._facades(side)
        for side in sides:
            self._side_objects(side)
        self._cars()
        self.objects.sort(key=lambda item: -item[0])
        for _, draw in self.objects:
            draw()
        if s.ego_hood:
            self._ego_hood()

    def _side_layout(self, sign: int) -> dict:
        s, rng = self.s, self.rng
        edge = self.road_r if sign > 0 else -self.road_l
        side = {"sign": sign, "edge": edge}
        x = edge
        side["verge"] = (x, x + rng.uniform(0.8, 3.0)) if rng.random() < s.verge_prob else None
        if side["verge"]:
            x = side["verge"][1]
        side["sidewalk"] = (
            (x, x + rng.uniform(2.2, 5.5)) if rng.random() < s.sidewalk_prob else None
        )
        if side["sidewalk"]:
            x = side["sidewalk"][1]
        side["building"] = rng.random() < s.building_prob
        side["facade_x"] = x + (rng.uniform(0.0, 1.0) if side["sidewalk"] else rng.uniform(2, 12))
        side["forest"] = (not side["building"]) and rng.random() < s.forest_prob
        side["outer"] = x  # end of the paved/verge bands
        return side

    # ------------------------------------------------------------------ background
    def _sky(self) -> None:
        h = self.c.label.shape[0]
        rng = self.rng
        if self.clear:
            top, bottom = (
                _jitter(rng, (0.33, 0.53, 0.84), 0.05),
                _jitter(rng, (0.70, 0.80, 0.92), 0.04),
            )
        else:
            top, bottom = (
                _jitter(rng, (0.70, 0.74, 0.80), 0.05),
                _jitter(rng, (0.86, 0.87, 0.89), 0.03),
            )
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] ** 0.7
        self.c.albedo[:] = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(
            bottom, np.float32
        )
        self.c.label[:] = SKY
        self.c.tex[:] = CLOUD_TEX

    def _skyline(self, urban: bool) -> None:
        """Distant buildings or tree line around the horizon, so the road never meets the sky."""
        h, w = self.c.label.shape
        rng, y_h = self.rng, self.cam.y_h
        x = -5.0
        while x < w + 5:
            bw = rng.uniform(0.03, 0.12) * w
            if urban and rng.random() < 0.75:
                top = y_h - rng.uniform(0.02, 0.10) * h
                color = _jitter(rng, _pick(rng, self.s.facade_colors), 0.05)
                self.c.rect(x, top, x + bw, y_h + 2, BUILDING, color, BRICK_TEX)
            else:
                top = y_h - rng.uniform(0.015, 0.06) * h
                color = _jitter(rng, _pick(rng, self.s.vegetation_colors), 0.03)
                self.c.ellipse(
                    x + bw / 2, y_h + 1, bw * 0.7, y_h + 1 - top, VEGETATION, color, LEAF_TEX
                )
                self.c.rect(x, y_h - 1, x + bw, y_h + 2, VEGETATION, color, LEAF_TEX)
            x += bw * rng.uniform(0.6, 1.0)

    def _ground(self, sides: list[dict]) -> None:
        s, rng, cam, c = self.s, self.rng, self.cam, self.c
        h, w = c.label.shape
        base = _jitter(rng, _pick(rng, s.terrain_colors), 0.03)
        c.rect(-5, cam.y_h, w + 5, h + 5, TERRAIN, base, GRASS_GROUND_TEX)
        z0, z1 = 0.5, self.z_far * 4
        for side in sides:
            sg = side["sign"]
            if side["verge"]:
                a, b = side["verge"]
                color = _jitter(rng, _pick(rng, s.terrain_colors), 0.03)
                c.poly(_band(cam, sg * a, sg * b, z0, z1), TERRAIN, color, GRASS_GROUND_TEX)
            if side["sidewalk"]:
                a, b = side["sidewalk"]
                paving = _jitter(
                    rng,
                    _pick(rng, ((0.56, 0.53, 0.50), (0.60, 0.50, 0.47), (0.50, 0.50, 0.52))),
                    0.03,
                )
                c.poly(_band(cam, sg * a, sg * b, z0, z1), SIDEWALK, paving, PAVING_TEX)
                curb = tuple(min(1.0, v * 1.2) for v in paving)
                c.poly(_band(cam, sg * a, sg * (a + 0.15), z0, z1), SIDEWALK, curb, FLAT)
            if rng.random() < s.ground_patch_prob:
                # A driveway / gravel patch: Cityscapes "ground" (void).
                za = rng.uniform(self.z_near + 2, 40)
                a = side["edge"]
                b = side["outer"] + rng.uniform(1, 6)
                color = _jitter(rng, (0.47, 0.43, 0.37), 0.04)
                c.poly(
                    _band(cam, sg * a, sg * b, za, za + rng.uniform(3, 10)),
                    GROUND,
                    color,
                    ROUGH_TEX,
                )
        road = _jitter(rng, (0.36, 0.36, 0.37), 0.04)
        c.poly(_band(cam, self.road_l, self.road_r, z0, z1), ROAD, road, ROAD_TEX)
        self._markings()
        self._shadows()

    def _markings(self) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        white = _jitter(rng, (0.85, 0.85, 0.82), 0.03)
        half = 0.07
        edges = [self.road_l + 0.3, self.road_r - 0.3]
        for x in edges:
            if rng.random() < 0.7:
                c.poly(_band(cam, x - half, x + half, 0.5, self.z_far), None, white)
        lanes = np.arange(self.road_l + 3.5, self.road_r - 1.5, 3.5)
        if len(lanes) == 0:
            lanes = np.array([(self.road_l + self.road_r) / 2])
        period, dash = rng.uniform(8, 14), rng.uniform(2.5, 4.5)
        for x in lanes:
            z = self.z_near - rng.uniform(0, period)
            while z < 120:
                if z + dash > 0.5:
                    c.poly(_band(cam, x - half, x + half, max(z, 0.5), z + dash), None, white)
                z += period

    def _shadows(self) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        if rng.random() >= self.s.shadow_prob:
            return
        for _ in range(int(rng.integers(1, 5))):
            x0 = rng.uniform(self.road_l - 6, self.road_r)
            z0 = rng.uniform(self.z_near, 50)
            c.darken(
                _band(cam, x0, x0 + rng.uniform(2, 8), z0, z0 + rng.uniform(2, 15)),
                rng.uniform(0.5, 0.75),
            )

    # ------------------------------------------------------------------ facades
    def _facades(self, side: dict) -> None:
        rng, c, cam, s = self.rng, self.c, self.cam, self.s
        xb = side["sign"] * side["facade_x"]
        blocks = []
        z = 0.6
        while z < self.z_far:
            length = rng.uniform(8, 28)
            blocks.append((z, z + length, rng.uniform(7, 26)))
            z += length
        for z0, z1, height in reversed(blocks):  # far first
            color = _jitter(rng, _pick(rng, s.facade_colors), 0.04)
            u, v = cam.project([xb, xb, xb, xb], [z0, z0, z1, z1], [0, height, height, 0])
            c.poly(np.stack([u, v], 1), BUILDING, color, BRICK_TEX)
            if cam.scale(z0) * 1.2 < 2.0 and z0 > 30:
                continue
            glass = _jitter(
                rng, _pick(rng, ((0.20, 0.24, 0.28), (0.32, 0.36, 0.40), (0.15, 0.15, 0.17))), 0.04
            )
            frame = tuple(min(1.0, v * 1.15) for v in color)
            col_step, row_step = rng.uniform(2.6, 4.0), rng.uniform(2.9, 3.4)
            win_w, win_h = col_step * rng.uniform(0.35, 0.6), row_step * rng.uniform(0.4, 0.6)
            zs = np.arange(z0 + 0.8, z1 - win_w, col_step)
            hs = np.arange(rng.uniform(3.2, 4.2), height - win_h - 0.5, row_step)
            if len(zs) and len(hs):
                za, hy = (g.reshape(-1, 1) for g in np.meshgrid(zs, hs))
                corners_z = np.hstack([za, za, za + win_w, za + win_w])
                corners_h = np.hstack([hy, hy + win_h, hy + win_h, hy])
                u, v = cam.project(np.full(corners_z.shape, xb), corners_z, corners_h)
                c.poly(np.stack([u, v], 2), None, glass, FLAT)
            # A door or shop window band at street level.
            if rng.random() < 0.6 and z1 - z0 > 4:
                za = rng.uniform(z0 + 0.5, z1 - 3)
                u, v = cam.project([xb] * 4, [za, za, za + 2.5, za + 2.5], [0, 2.6, 2.6, 0])
                c.poly(np.stack([u, v], 1), None, frame if rng.random() < 0.3 else glass, FLAT)

    # ------------------------------------------------------------------ standing objects
    def _add(self, z: float, draw: Callable[[], None]) -> None:
        self.objects.append((z, draw))

    def _side_objects(self, side: dict) -> None:
        s, rng = self.s, self.rng
        sg, edge, outer = side["sign"], side["edge"], side["outer"]
        far_x = side["facade_x"] - 0.5 if side["building"] else outer + 25
        walk = side["sidewalk"] or (edge + 0.3, edge + 2.0)
        # Trees: street trees on the sidewalk or a field / forest edge.
        n_trees = int(rng.integers(s.trees_per_side[0], s.trees_per_side[1] + 1))
        if side["forest"]:
            n_trees += int(rng.integers(10, 22))
        for _ in range(n_trees):
            if side["building"] or (not side["forest"] and rng.random() < 0.4):
                x = rng.uniform(walk[0] + 0.5, max(walk[1], walk[0] + 1.0))
            else:
                x = rng.uniform(outer + 0.5, min(far_x, outer + 18))
            z = rng.uniform(self.z_near + 1, 110)
            big = 1.5 if side["forest"] else 1.0
            self._add(z, lambda x=sg * x, z=z, big=big: self._tree(x, z, big))
        if not side["building"] and not side["forest"] and rng.random() < 0.5:
            z = rng.uniform(self.z_near + 3, 40)
            self._add(
                z + 8,
                lambda z=z: self._hedge(sg, outer + rng.uniform(0.3, 3), z, z + rng.uniform(5, 30)),
            )
        if not side["building"] and rng.random() < 0.5:
            # A lone house across the field keeps buildings present in the rural domain.
            z = rng.uniform(25, 80)
            x = sg * rng.uniform(outer + 6, outer + 25)
            self._add(z + 6, lambda x=x, z=z: self._house(x, z))
        for _ in range(_per_side(rng, s.poles, 0.5)):
            x = sg * (
                edge
                + (side["verge"][1] - side["verge"][0] if side["verge"] else 0)
                + rng.uniform(0.3, 0.8)
            )
            z = rng.uniform(self.z_near + 1, 45)
            self._add(z, lambda x=x, z=z: self._pole(x, z))
        for _ in range(_per_side(rng, s.persons, 0.3)):
            x = sg * rng.uniform(walk[0] + 0.3, max(walk[1] - 0.3, walk[0] + 0.6))
            z = rng.uniform(self.z_near + 0.5, min(45, 1.75 * self.cam.f / (0.07 * self.cam.h)))
            self._add(z, lambda x=x, z=z: self._person(x, z))
        for _ in range(int(rng.integers(s.statics[0], s.statics[1] + 1))):
            x = sg * rng.uniform(walk[0] + 0.2, walk[1] + 0.5)
            z = rng.uniform(self.z_near + 1, 40)
            self._add(z, lambda x=x, z=z: self._static(x, z))

    def _tree(self, x: float, z: float, big: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        color = _jitter(rng, _pick(rng, self.s.vegetation_colors), 0.04)
        trunk_h = rng.uniform(1.5, 3.0)
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        tw = _thin(cam, 0.3, z, 2) / 2
        bark = _jitter(rng, (0.28, 0.22, 0.16), 0.03)
        c.rect(u - tw, v - (trunk_h + 0.5) * sc, u + tw, v, VEGETATION, bark, FLAT)
        radius = rng.uniform(1.5, 3.2) * big
        cy = v - (trunk_h + radius * 0.8) * sc
        for _ in range(int(rng.integers(3, 7))):
            dx, dy = rng.normal(0, 0.45 * radius, 2)
            r = radius * rng.uniform(0.55, 0.9)
            shade = _jitter(rng, color, 0.03)
            c.ellipse(
                u + dx * sc,
                cy + dy * sc,
                r * sc,
                r * sc * rng.uniform(0.8, 1.1),
                VEGETATION,
                shade,
                LEAF_TEX,
            )

    def _hedge(self, sg: int, x: float, z0: float, z1: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        color = _jitter(rng, _pick(rng, self.s.vegetation_colors), 0.04)
        height = rng.uniform(0.8, 1.8)
        u, v = cam.project([sg * x] * 4, [z0, z0, z1, z1], [0, height, height, 0])
        c.poly(np.stack([u, v], 1), VEGETATION, color, LEAF_TEX)

    def _house(self, x: float, z: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        color = _jitter(rng, _pick(rng, self.s.facade_colors), 0.04)
        width, height = rng.uniform(6, 14), rng.uniform(4, 8)
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        c.rect(
            u - width * sc / 2, v - height * sc, u + width * sc / 2, v, BUILDING, color, BRICK_TEX
        )
        roof = _jitter(rng, (0.45, 0.22, 0.17), 0.05)
        c.poly(
            [
                (u - width * sc * 0.55, v - height * sc),
                (u + width * sc * 0.55, v - height * sc),
                (u, v - (height + 3) * sc),
            ],
            BUILDING,
            roof,
            ROUGH_TEX,
        )
        glass = _jitter(rng, (0.2, 0.22, 0.25), 0.03)
        for k in range(int(width // 3)):
            wx = u - width * sc / 2 + (1 + 3 * k) * sc
            c.rect(wx, v - (height - 1.2) * sc, wx + 1.1 * sc, v - (height - 2.4) * sc, None, glass)

    def _pole(self, x: float, z: float) -> None:
        rng, c, cam, s = self.rng, self.c, self.cam, self.s
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        height = rng.uniform(3.5, 8.0)
        half = _thin(cam, 0.18, z, self.min_thin) / 2
        metal = _jitter(
            rng, _pick(rng, ((0.45, 0.46, 0.47), (0.58, 0.58, 0.56), (0.26, 0.30, 0.28))), 0.03
        )
        c.rect(u - half, v - height * sc, u + half, v, POLE, metal, FLAT)
        # Light / shadow side of the cylinder.
        c.rect(
            u - half,
            v - height * sc,
            u - half * 0.2,
            v,
            None,
            tuple(min(1.0, m * 1.25) for m in metal),
        )
        if rng.random() < s.light_prob:
            self._traffic_light(u, v - height * sc, sc, x)
        if rng.random() < s.sign_prob:
            self._sign(u, v - rng.uniform(2.0, min(3.2, height - 0.4)) * sc, sc)

    def _traffic_light(self, u: float, top: float, sc: float, x: float) -> None:
        rng, c = self.rng, self.c
        bw = max(float(self.min_thin + 2), 0.45 * sc)
        bh = max(2.6 * bw, 1.15 * sc)
        towards_road = -1 if x > 0 else 1
        cx = u + towards_road * bw * rng.uniform(0.0, 1.2)
        body = _jitter(
            rng, _pick(rng, ((0.08, 0.08, 0.08), (0.12, 0.13, 0.10), (0.45, 0.40, 0.15))), 0.02
        )
        c.rect(cx - bw / 2, top, cx + bw / 2, top + bh, LIGHT, body, FLAT)
        lit = int(rng.integers(3))
        lamps = ((0.95, 0.15, 0.1), (0.95, 0.75, 0.1), (0.2, 0.9, 0.35))
        r = bw * 0.33
        for k, lamp in enumerate(lamps):
            color = lamp if k == lit else tuple(0.2 + 0.15 * q for q in lamp)
            c.ellipse(cx, top + bh * (k + 0.5) / 3, r, r, None, color, FLAT)

    def _sign(self, u: float, cy: float, sc: float) -> None:
        rng, c = self.rng, self.c
        size = max(float(self.min_thin * 2 + 1), rng.uniform(0.7, 1.0) * sc)
        r = size / 2
        kind = int(rng.integers(4))
        if kind == 0:  # round prohibitory: red ring, white inside
            c.ellipse(u, cy, r, r, SIGN, _jitter(rng, (0.8, 0.1, 0.1), 0.03))
            c.ellipse(u, cy, r * 0.7, r * 0.7, None, (0.92, 0.92, 0.9))
        elif kind == 1:  # round mandatory: blue with white arrow
            c.ellipse(u, cy, r, r, SIGN, _jitter(rng, (0.1, 0.3, 0.75), 0.03))
            c.rect(u - r * 0.15, cy - r * 0.5, u + r * 0.15, cy + r * 0.5, None, (0.95, 0.95, 0.95))
        elif kind == 2:  # warning triangle
            c.poly(
                [(u - r, cy + r * 0.8), (u + r, cy + r * 0.8), (u, cy - r)],
                SIGN,
                _jitter(rng, (0.85, 0.12, 0.1), 0.03),
            )
            c.poly(
                [(u - r * 0.55, cy + r * 0.5), (u + r * 0.55, cy + r * 0.5), (u, cy - r * 0.4)],
                None,
                (0.95, 0.93, 0.85),
            )
        else:  # rectangular information / direction sign
            color = _jitter(
                rng, _pick(rng, ((0.95, 0.8, 0.1), (0.1, 0.45, 0.25), (0.15, 0.3, 0.7))), 0.03
            )
            c.rect(u - r * 1.3, cy - r * 0.7, u + r * 1.3, cy + r * 0.7, SIGN, color)
            c.rect(u - r * 1.1, cy - r * 0.1, u + r * 1.1, cy + r * 0.1, None, (0.95, 0.95, 0.95))

    def _person(self, x: float, z: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        height = rng.uniform(1.55, 1.95) * sc
        width = max(0.5 * sc, self.min_thin * 2.0)
        skin = _jitter(
            rng, _pick(rng, ((0.85, 0.68, 0.55), (0.62, 0.45, 0.33), (0.40, 0.28, 0.20))), 0.03
        )
        top_c = tuple(float(q) for q in rng.uniform(0.05, 0.9, 3))
        legs_c = _jitter(
            rng, _pick(rng, ((0.12, 0.12, 0.15), (0.2, 0.25, 0.4), (0.35, 0.3, 0.25))), 0.04
        )
        leg_w = width * 0.22
        stride = width * rng.uniform(0.0, 0.25)
        hip = v - height * 0.47
        c.poly(
            [
                (u - width * 0.3, hip),
                (u - width * 0.3 + leg_w, hip),
                (u - stride + leg_w / 2, v),
                (u - stride - leg_w / 2, v),
            ],
            PERSON,
            legs_c,
        )
        c.poly(
            [
                (u + width * 0.3 - leg_w, hip),
                (u + width * 0.3, hip),
                (u + stride + leg_w / 2, v),
                (u + stride - leg_w / 2, v),
            ],
            PERSON,
            legs_c,
        )
        c.ellipse(u, v - height * 0.64, width * 0.5, height * 0.2, PERSON, top_c)
        c.ellipse(u, v - height * 0.9, width * 0.22, height * 0.085, PERSON, skin)

    def _static(self, x: float, z: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        w, h = rng.uniform(0.5, 1.4) * sc, rng.uniform(0.6, 1.2) * sc
        color = _jitter(
            rng,
            _pick(
                rng, ((0.28, 0.35, 0.30), (0.50, 0.40, 0.30), (0.70, 0.30, 0.15), (0.3, 0.3, 0.32))
            ),
            0.04,
        )
        c.rect(u - w / 2, v - h, u + w / 2, v, STATIC, color, ROUGH_TEX)

    def _cars(self) -> None:
        s, rng = self.s, self.rng
        lanes = list(np.arange(self.road_l + 1.75, self.road_r - 1.0, 3.5))
        parked = [self.road_l + 1.1, self.road_r - 1.1]
        taken: dict[float, list[float]] = {}
        for _ in range(int(rng.integers(s.cars[0], s.cars[1] + 1))):
            x = (
                float(parked[int(rng.integers(2))])
                if rng.random() < 0.35 or not lanes
                else float(rng.choice(lanes))
            )
            z_min = self.z_near + (6.0 if abs(x) < 1.5 else 1.0)
            z = rng.uniform(z_min, 70)
            if any(abs(z - other) < 6 for other in taken.get(x, [])):
                continue
            taken.setdefault(x, []).append(z)
            self._add(z, lambda x=x, z=z: self._car(x, z))

    def _car(self, x: float, z: float) -> None:
        rng, c, cam = self.rng, self.c, self.cam
        palette = (
            (0.85, 0.85, 0.85),
            (0.08, 0.08, 0.09),
            (0.6, 0.62, 0.64),
            (0.6, 0.1, 0.1),
            (0.15, 0.25, 0.55),
            (0.3, 0.3, 0.32),
            (0.2, 0.35, 0.25),
        )
        body = _jitter(rng, _pick(rng, palette), 0.04)
        width, height = rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7)
        # Shadow under the car on the road.
        self.c.darken(_band(cam, x - width * 0.6, x + width * 0.6, z - 0.35, z + 3), 0.45)
        u, v = cam.project(x, z)
        sc = cam.scale(z)
        hw, hh = width * sc / 2, height * sc
        c.rect(u - hw, v - hh * 0.55, u + hw, v - hh * 0.1, CAR, body)
        c.poly(
            [
                (u - hw * 0.85, v - hh * 0.55),
                (u + hw * 0.85, v - hh * 0.55),
                (u + hw * 0.68, v - hh),
                (u - hw * 0.68, v - hh),
            ],
            CAR,
            body,
        )
        glass = _jitter(rng, (0.18, 0.22, 0.26), 0.03)
        c.poly(
            [
                (u - hw * 0.75, v - hh * 0.58),
                (u + hw * 0.75, v - hh * 0.58),
                (u + hw * 0.6, v - hh * 0.93),
                (u - hw * 0.6, v - hh * 0.93),
            ],
            None,
            glass,
        )
        tyre = (0.05, 0.05, 0.05)
        c.rect(u - hw * 0.95, v - hh * 0.2, u - hw * 0.55, v, CAR, tyre)
        c.rect(u + hw * 0.55, v - hh * 0.2, u + hw * 0.95, v, CAR, tyre)
        red = (0.85, 0.1, 0.08)
        c.rect(u - hw * 0.95, v - hh * 0.48, u - hw * 0.7, v - hh * 0.38, None, red)
        c.rect(u + hw * 0.7, v - hh * 0.48, u + hw * 0.95, v - hh * 0.38, None, red)
        c.rect(u - hw * 0.25, v - hh * 0.33, u + hw * 0.25, v - hh * 0.22, None, (0.9, 0.9, 0.85))

    def _ego_hood(self) -> None:
        rng, c = self.rng, self.c
        h, w = c.label.shape
        depth = rng.uniform(0.05, 0.09) * h
        color = _jitter(rng, (0.12, 0.12, 0.14), 0.03)
        c.ellipse(w / 2, h + depth * 1.6, w * 0.75, depth * 2.6, EGO, color)
        c.ellipse(
            w / 2,
            h + depth * 1.6,
            w * 0.35,
            depth * 2.3,
            None,
            tuple(min(1.0, q + 0.1) for q in color),
        )


def _ground_texture(
    src: np.ndarray,
    cam: _Camera,
    ground: tuple[np.ndarray, np.ndarray, np.ndarray],
    ppm: float,
    offset: np.ndarray,
) -> np.ndarray:
    """Sample ``src`` on the ground plane (``ppm`` texture pixels per metre), faded with depth."""
    lateral, depth, d = ground
    th, tw = src.shape
    map_x = lateral * np.float32(ppm) + np.float32(offset[0])
    map_x -= np.floor(map_x * np.float32(1.0 / (tw - 1))) * np.float32(tw - 1)
    rows_y = np.mod(depth * np.float32(ppm) + np.float32(offset[1]), th - 1)
    map_y = np.ascontiguousarray(np.broadcast_to(rows_y, lateral.shape), dtype=np.float32)
    out = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR)
    out *= np.clip(d * (1.5 / ppm), 0.0, 1.0)  # detail vanishes where it would alias
    out[: int(np.ceil(cam.y_h + 1))] = 0
    return out


def _ground_coords(cam: _Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel lateral metres, per row depth metres and pixels-per-metre of the ground."""
    rows = np.arange(cam.h, dtype=np.float32)
    d = np.maximum((rows - np.float32(cam.y_h)) / np.float32(cam.hc), np.float32(1e-3))[:, None]
    cols = np.arange(cam.w, dtype=np.float32)[None, :] - np.float32(cam.x_v)
    return cols / d, np.float32(cam.f) / d, d


@lru_cache(maxsize=64)
def _scaled(name: str, scale: float, blur: float = 0.0) -> np.ndarray:
    src = _textures()[name]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    tex = cv2.resize(src, None, fx=scale, fy=scale, interpolation=interp)
    # Mirror into a 2x2 tile so that wrapping around it shows no seams.
    tex = np.vstack([np.hstack([tex, tex[:, ::-1]]), np.hstack([tex[::-1], tex[::-1, ::-1]])])
    return cv2.GaussianBlur(tex, (0, 0), blur, borderType=cv2.BORDER_REFLECT) if blur else tex


def _screen_texture(
    name: str, h: int, w: int, scale: float, rng: np.random.Generator, blur: float = 0.0
) -> np.ndarray:
    """Texture ``name`` scaled (quantised to 5 %), randomly shifted and tiled to ``h x w``."""
    tex = _scaled(name, round(scale * 20) / 20, blur)
    th, tw = tex.shape
    oy, ox = int(rng.integers(th)), int(rng.integers(tw))
    return tex[np.ix_((oy + np.arange(h)) % th, (ox + np.arange(w)) % tw)]


def _shade(scene: _Scene) -> np.ndarray:
    """Albedo x texture x shadows, then the domain's colour balance, noise and blur → uint8."""
    c, s, rng, cam = scene.c, scene.s, scene.rng, scene.cam
    h, w = c.label.shape
    tx = _textures()
    ground = _ground_coords(cam)
    layers = np.zeros((_N_TEX, h, w), np.float32)
    layers[ROAD_TEX] = _ground_texture(tx["gravel"], cam, ground, 45.0, rng.uniform(0, 512, 2))
    layers[PAVING_TEX] = _ground_texture(tx["brick"], cam, ground, 60.0, rng.uniform(0, 512, 2))
    layers[GRASS_GROUND_TEX] = _ground_texture(
        tx["grass"], cam, ground, 35.0, rng.uniform(0, 512, 2)
    )
    layers[BRICK_TEX] = _screen_texture("brick", h, w, rng.uniform(0.25, 0.5) * h / 256, rng)
    layers[LEAF_TEX] = _screen_texture("grass", h, w, rng.uniform(0.5, 0.9) * h / 256, rng)
    layers[CLOUD_TEX] = _screen_texture("moon", h, w, rng.uniform(1.0, 2.0), rng, blur=6.0)
    layers[ROUGH_TEX] = _screen_texture("gravel", h, w, rng.uniform(0.4, 0.8) * h / 256, rng)
    amp = np.array(
        [0.03, 0.10, 0.12, 0.22, 0.12, 0.35, 0.25 if not scene.clear else 0.08, 0.18], np.float32
    )
    mod = np.take_along_axis(layers, c.tex[None].astype(np.intp), 0)[0] * amp[c.tex]
    light = np.float32(rng.uniform(0.9, 1.1)) * c.shade * (1.0 + mod)
    img = c.albedo * light[..., None]
    img = img * np.asarray(s.gains, np.float32) + np.float32(s.brightness)
    img = (img - np.float32(0.5)) * np.float32(s.contrast) + np.float32(0.5)
    lum = img.mean(axis=2, keepdims=True)
    img = lum + (img - lum) * np.float32(s.saturation)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(s.noise)
    img = cv2.GaussianBlur(img, (0, 0), s.blur)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_scene(
    style: Style, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic frame: ``(image uint8 (H,W,3) RGB, labelIds uint8 (H,W))``."""
    scene = _Scene(style, height, width, rng)
    scene.build()
    return _shade(scene), scene.c.label.copy()
