"""Per-vertex appearance: skin tone, hair, clothing (from each vertex's dominant bone and its position along the
limb in the reference pose), shoes; Lambert + ambient lighting with a random light direction.

No textures: clothing gets a random base colour, optional stripes or a two-tone pattern, and per-vertex noise.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from metrabs_ros.training.synth.body_model import BodyModel

# Regions
SKIN_HEAD, HAIR, TORSO, ARM, HAND, LEG, FOOT = range(7)

# Skin tones (sRGB, 0..255) from light to dark; sampled by interpolation.
_SKIN_TONES = np.array([[255, 224, 196], [234, 192, 160], [211, 160, 120], [170, 120, 85], [120, 80, 55],
                        [80, 52, 36]], np.float32)
_HAIR = np.array([[20, 15, 10], [60, 40, 25], [110, 75, 40], [180, 140, 80], [220, 200, 150], [150, 150, 150],
                  [100, 30, 20]], np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class VertexTables:
    region: np.ndarray     # int8 [V]
    limb_t: np.ndarray     # float32 [V] 0 at the limb root (shoulder / hip) .. 1 at the wrist / ankle
    height_t: np.ndarray   # float32 [V] reference-pose height, 0 at the feet .. 1 at the head top


@functools.lru_cache(maxsize=2)
def _tables_cached(body_id: int, body: BodyModel) -> VertexTables:
    labels = body.bone_labels
    dom = body.dominant_bone
    v = body.ref_vertices_m
    heads = body.ref_bone_heads_m
    names = np.array(labels)[dom]
    region = np.full(len(v), TORSO, np.int8)
    limb_t = np.zeros(len(v), np.float32)
    is_ = np.vectorize(lambda n, keys: any(n.startswith(k) for k in keys), excluded={'keys'})
    head_mask = is_(names, keys=('head', 'eye', 'neck0'))
    region[head_mask] = SKIN_HEAD
    bi = body.bone_index
    for s in 'LR':
        arm = is_(names, keys=(f'upperarm01.{s}', f'upperarm02.{s}', f'lowerarm01.{s}', f'lowerarm02.{s}'))
        arm &= np.char.endswith(names, '.' + s)
        region[arm] = ARM
        a, b = heads[bi(f'upperarm01.{s}')], heads[bi(f'wrist.{s}')]
        t = (v[arm] - a) @ (b - a) / float((b - a) @ (b - a))
        limb_t[arm] = np.clip(t, 0, 1)
        hand = is_(names, keys=('wrist', 'finger', 'metacarpal')) & np.char.endswith(names, '.' + s)
        region[hand] = HAND
        leg = is_(names, keys=('upperleg', 'lowerleg')) & np.char.endswith(names, '.' + s)
        region[leg] = LEG
        a, b = heads[bi(f'upperleg01.{s}')], heads[bi(f'foot.{s}')]
        t = (v[leg] - a) @ (b - a) / float((b - a) @ (b - a))
        limb_t[leg] = np.clip(t, 0, 1)
        foot = is_(names, keys=('foot', 'toe')) & np.char.endswith(names, '.' + s)
        region[foot] = FOOT
    # Hair: head vertices above the eyes or behind the ears (reference pose, facing -y).
    eye_z = heads[bi('eye.L'), 2]
    head_c = heads[bi('head')]
    behind = (v[:, 1] > head_c[1] + 0.02) & (v[:, 2] > eye_z - 0.06)
    hair = (region == SKIN_HEAD) & ((v[:, 2] > eye_z + 0.035) | behind)
    region[hair] = HAIR
    z = v[:, 2]
    height_t = (z - z.min()) / (z.max() - z.min())
    return VertexTables(region, limb_t, height_t.astype(np.float32))


def vertex_tables(body: BodyModel) -> VertexTables:
    return _tables_cached(id(body), body)


def _srgb_random(rng, saturation=(0.1, 0.9), value=(0.15, 0.95)) -> np.ndarray:
    h = rng.uniform(0, 6)
    s = rng.uniform(*saturation)
    v = rng.uniform(*value)
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return (np.array(rgb) + (v - c)) * 255.0


def sample_albedo(body: BodyModel, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex albedo ``[V, 3]`` float32 (0..255) for one person: skin tone, hair, top, bottom, shoes."""
    tab = vertex_tables(body)
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    k = int(t)
    skin = _SKIN_TONES[k] * (1 - (t - k)) + _SKIN_TONES[min(k + 1, len(_SKIN_TONES) - 1)] * (t - k)
    skin = skin * rng.uniform(0.9, 1.1, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    bald = rng.uniform() < 0.1
    top = _srgb_random(rng)
    bottom = _srgb_random(rng, value=(0.1, 0.8))
    shoes = _srgb_random(rng, value=(0.05, 0.6))
    sleeve = rng.choice([0.05, 0.35, 0.6, 1.05], p=[0.15, 0.35, 0.1, 0.4]) + rng.uniform(-0.05, 0.05)
    trouser = rng.choice([0.45, 0.75, 1.05], p=[0.2, 0.15, 0.65]) + rng.uniform(-0.05, 0.05)
    dress = rng.uniform() < 0.1
    barefoot = rng.uniform() < 0.08

    albedo = np.empty((len(tab.region), 3), np.float32)
    r = tab.region
    albedo[:] = top
    albedo[r == SKIN_HEAD] = skin
    albedo[r == HAIR] = skin if bald else hair
    albedo[r == HAND] = skin
    arm = r == ARM
    albedo[arm] = np.where((tab.limb_t[arm] < sleeve)[:, None], top, skin)
    leg = r == LEG
    albedo[leg] = np.where((tab.limb_t[leg] < trouser)[:, None], top if dress else bottom, skin)
    # lower torso (below the waist) belongs to the trousers / skirt
    waist = (r == TORSO) & (tab.height_t < rng.uniform(0.52, 0.58))
    albedo[waist] = top if dress else bottom
    albedo[r == FOOT] = skin if barefoot else shoes
    # clothing patterns
    cloth = (r == TORSO) | (arm & (tab.limb_t < sleeve))
    pattern = rng.uniform()
    if pattern < 0.25:
        period = rng.uniform(0.02, 0.08)
        stripes = (np.floor(tab.height_t[cloth] / period) % 2).astype(bool)
        albedo[np.nonzero(cloth)[0][stripes]] = _srgb_random(rng)
    noise = rng.normal(1.0, 0.04, (len(albedo), 1)).astype(np.float32)
    return np.clip(albedo * noise, 0, 255)


def shade(albedo: np.ndarray, normals_cam: np.ndarray, light_dir_cam: np.ndarray, ambient: float,
          diffuse: float, tint: np.ndarray) -> np.ndarray:
    """Lambert + ambient vertex colours ``[N, 3]``: ``albedo * tint * (ambient + diffuse * max(0, n . -l))``.

    ``light_dir_cam`` is the direction the light travels (camera frame, unit); ``normals_cam`` are unit normals.
    """
    lambert = np.maximum(normals_cam @ (-np.asarray(light_dir_cam, np.float32)), 0.0)
    return albedo * tint[None, :] * (ambient + diffuse * lambert)[:, None]
