"""The keyer against a synthetic truth, the backdrop placement, and the choice of key colour.

The scene (tests/unit/keying_scene.py): an RGBA subject (skin, dark hair, a blue-grey shirt, anti-aliased
edges) moving over a green backdrop that drifts by (+25, -30, +25) in RGB over the run, with Gaussian camera
noise of 3 levels on every pixel. Frames go to the keyer in windows of 16, as the sampler's windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from infinitetalk.errors import InputError
from infinitetalk.keying import (
    KEY_COLORS,
    Keyer,
    KeySettings,
    background_busy,
    choose_key_color,
    chroma,
    parse_color,
    place_on_backdrop,
    subject_mask,
)

from .keying_scene import SKIN, backdrop_colour, bands, scene, subject

T, WINDOW = 160, 16
# Stated errors (mean absolute alpha error, 0-1) of the default keyer on this scene. Measured: inside 0.0004,
# outside 0.0001, edge band 0.059 (the edge band holds the anti-aliased pixels, where the keyer assumes the
# subject's colour is neutral along the key direction, plus its 0.7 px softness).
MAX_ERROR = {"inside": 0.01, "outside": 0.01, "edge": 0.09}


def _key(frames: np.ndarray, keyer: Keyer | None = None, window: int = WINDOW) -> np.ndarray:
    keyer = keyer or Keyer()
    return np.concatenate([keyer.key_chunk(frames[i : i + window]) for i in range(0, len(frames), window)])


def _frame_changes(alpha: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Mean |alpha(t+1) - alpha(t)| for frame pairs across window joins and inside windows."""
    d = np.abs(np.diff(alpha, axis=0)).mean(axis=(1, 2))
    joins = [i - 1 for i in range(window, len(alpha), window)]
    inside = [i for i in range(len(d)) if i not in joins]
    return d[joins], d[inside]


@pytest.fixture(scope="module")
def moving():
    frames, truth = scene(T)
    keyer = Keyer()
    rgba = _key(frames, keyer)
    return frames, truth, rgba, keyer


def test_alpha_matches_the_truth_inside_outside_and_on_edges(moving):
    _, truth, rgba, _ = moving
    alpha = rgba[..., 3].astype(np.float32) / 255
    errors = {name: [] for name in MAX_ERROR}
    for t in range(T):
        for name, region in bands(truth[t]).items():
            errors[name].append(np.abs(alpha[t] - truth[t])[region].mean())
    for name, limit in MAX_ERROR.items():
        assert np.mean(errors[name]) < limit, (name, np.mean(errors[name]))
        assert np.max(errors[name]) < 2 * limit, (
            name,
            np.max(errors[name]),
        )  # every frame, not just on average


def test_backdrop_is_followed_as_it_drifts(moving):
    _, _, _, keyer = moving
    first, last = keyer.estimates[0].key, keyer.estimates[-1].key
    # each window's estimate within 4 levels of the backdrop in the middle of that window
    for k, est in enumerate(keyer.estimates):
        middle = k * WINDOW + WINDOW // 2
        assert np.abs(est.key - backdrop_colour(middle, T)).max() < 4, (k, est.key)
    assert np.abs(last - first).max() > 20  # it really moved


def test_no_jump_at_window_joins(moving):
    """The change in alpha from the last frame of a window to the first of the next is no larger than the
    typical change between neighbouring frames inside a window (the subject moves all the time)."""
    _, _, rgba, _ = moving
    joins, inside = _frame_changes(rgba[..., 3].astype(np.float32) / 255)
    assert joins.max() <= np.percentile(inside, 95), (joins, np.percentile(inside, 95))
    assert joins.mean() <= 1.1 * inside.mean(), (joins.mean(), inside.mean())


def test_no_jump_at_joins_of_a_still_subject():
    """A still subject: only noise changes the alpha inside a window, so a step at the joins would show. The
    carried state (smooth key estimate, temporal filter) keeps the joins like the rest; a keyer restarted
    for every window does not (that is what this measure catches)."""
    fg, a = subject(0, 96, 128)
    rng = np.random.default_rng(1)
    frames = np.empty((T, 96, 128, 3), np.uint8)
    for t in range(T):
        img = a[..., None] * fg + (1 - a[..., None]) * backdrop_colour(t, T) + rng.normal(0, 3, fg.shape)
        frames[t] = np.clip(np.round(img), 0, 255)
    carried, inside = _frame_changes(_key(frames)[..., 3].astype(np.float32) / 255)
    assert carried.mean() <= 1.25 * inside.mean(), (carried.mean(), inside.mean())
    restarted = np.concatenate([Keyer().key_chunk(frames[i : i + WINDOW]) for i in range(0, T, WINDOW)])
    jumps, inside_r = _frame_changes(restarted[..., 3].astype(np.float32) / 255)
    assert jumps.mean() > 1.5 * inside_r.mean()


def test_result_does_not_depend_on_memory_per_chunk():
    """Keying state is small: the keyer holds one frame of alpha and the estimate, whatever the length."""
    frames, _ = scene(48, 48, 64)
    keyer = Keyer()
    _key(frames, keyer)
    assert keyer._alpha.shape == (48, 64) and len(keyer.estimates) == 3


def test_colour_is_straight_and_despilled(moving):
    frames, truth, rgba, _ = moving
    t = 5
    inside = bands(truth[t])["inside"]
    fg, _ = subject(t, 96, 128)
    # opaque pixels keep their colour (within the camera noise)
    assert np.abs(rgba[t][..., :3][inside].astype(float) - fg[inside]).mean() < 3
    # half-transparent edge pixels: no green cast left (G no higher than the subject's own)
    half = (truth[t] > 0.3) & (truth[t] < 0.7)
    green_excess = rgba[t][..., 1][half].astype(float) - fg[..., 1][half]
    assert green_excess.mean() < 12, green_excess.mean()
    mixed = frames[t][..., 1][half].astype(float) - fg[..., 1][half]
    assert mixed.mean() > 30  # the input there is strongly green: the keyer removed it


def test_chunk_of_grey_frames_is_refused_with_the_fix():
    grey = np.full((2, 32, 32, 3), 128, np.uint8)
    with pytest.raises(InputError, match="no coloured backdrop"):
        Keyer().key_chunk(grey)


def test_settings_are_checked():
    with pytest.raises(InputError, match="softness"):
        KeySettings(softness=-1)
    with pytest.raises(InputError, match="key_color 'teal-ish' is not a colour"):
        parse_color("teal-ish")
    assert parse_color("auto") is None
    assert parse_color("#00ff00") == (0, 255, 0) and parse_color("0,71,187") == KEY_COLORS["blue"]


def test_key_colour_is_far_from_the_subject():
    fg, a = subject(0, 96, 128)
    skin_and_shirt = np.clip(fg, 0, 255).astype(np.uint8)
    name, rgb, distance = choose_key_color(skin_and_shirt, a)
    dists = {
        n: np.percentile(np.linalg.norm(chroma(skin_and_shirt[a > 0.5]) - chroma(np.array(c)), axis=-1), 1)
        for n, c in KEY_COLORS.items()
    }
    assert distance == pytest.approx(max(dists.values()), rel=1e-3)
    assert name not in ("red", "yellow")  # close to skin
    # a green subject never gets a green key
    green = np.zeros_like(skin_and_shirt)
    green[...] = (20, 160, 40)
    assert choose_key_color(green, a)[0] != "green"


def test_backdrop_has_no_halo_of_the_old_background():
    fg, a = subject(0, 96, 128)
    old = np.zeros((96, 128, 3), np.float32)
    old[...] = (250, 250, 250)  # a white room behind the subject
    photo = np.clip(a[..., None] * fg + (1 - a[..., None]) * old, 0, 255).astype(np.uint8)
    backdrop = place_on_backdrop(photo, a, key_color=KEY_COLORS["green"])
    outside = ~bands(a, margin=1)["inside"]
    # the old white background leaves nothing: no pixel outside the subject is brighter than key and subject
    near_edge = outside & (a > 0)
    brightness = backdrop.image[near_edge].astype(float).sum(axis=-1)
    assert brightness.max() < sum(SKIN) + 10, brightness.max()
    assert (backdrop.image[0, 0] == KEY_COLORS["green"]).all()
    assert backdrop.matte[bands(a, margin=5)["inside"]].min() > 0.99  # the subject stays (eroded 2 px)


def test_inverted_and_resized_masks_are_understood():
    fg, a = subject(0, 96, 128)
    inverted = 1.0 - a[::2, ::2]  # Load Image's mask: 1 where transparent, at another size
    m = subject_mask(inverted, 96, 128)
    assert np.abs(m - a).mean() < 0.02
    with pytest.raises(InputError, match="mask is empty"):
        subject_mask(np.zeros((96, 128)), 96, 128)


def test_busy_background_measure():
    rng = np.random.default_rng(0)
    plain = np.zeros((96, 128, 3), np.uint8)
    plain[...] = (0, 177, 64)
    busy = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert background_busy(plain) < 0.01 < 0.05 < background_busy(busy)


def test_keyed_portrait_on_its_chosen_backdrop_round_trips():
    """Portrait Backdrop -> keyer (hint = the backdrop's colour): the alpha comes back close to the matte."""
    fg, a = subject(3, 96, 128)
    photo = np.clip(a[..., None] * fg + (1 - a[..., None]) * 250, 0, 255).astype(np.uint8)
    backdrop = place_on_backdrop(photo, a)
    keyed = Keyer(hint=backdrop.key_color).key_chunk(backdrop.image[None])[0]
    alpha = keyed[..., 3].astype(np.float32) / 255
    assert np.abs(alpha - backdrop.matte).mean() < 0.02
    assert alpha[bands(backdrop.matte)["inside"]].min() > 0.95
