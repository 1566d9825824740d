"""Every image format users meet becomes upright 8-bit RGB; unreadable files fail naming the file."""

import numpy as np
import pytest
from PIL import Image

from gallery.embed import ImageError, decode_photo, gather_photos, list_photos, load_image
from gallery.embed.images import resize_image
from gallery.errors import InvalidInputError


@pytest.fixture(scope="module")
def rgb(faces_dir):
    return np.asarray(Image.open(faces_dir / "misc" / "obama_small.jpg").convert("RGB"))


def test_jpeg_loads_as_uint8_rgb(faces_dir, rgb):
    image = load_image(faces_dir / "misc" / "obama_small.jpg")
    assert image.dtype == np.uint8 and image.shape == rgb.shape == (240, 320, 3)
    np.testing.assert_array_equal(image, rgb)


def test_rgba_png_is_composited_to_rgb(faces_dir):
    image = load_image(faces_dir / "misc" / "alex-lacamoire.png")
    assert image.shape[2] == 3 and image.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert (image[:10, :10] == 255).all()
    np.testing.assert_array_equal(image[20:, 20:], rgb[20:, 20:])



@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_an_opaque_image_with_alpha_is_its_colours(tmp_path, rgb, mode):
    """Opaque images skip compositing (10x the cost of the conversion), to the same pixels."""
    opaque = Image.fromarray(rgb).convert(mode)
    opaque.save(tmp_path / "opaque.png")
    composited = Image.alpha_composite(Image.new("RGBA", opaque.size, (255, 255, 255, 255)), opaque.convert("RGBA"))
    np.testing.assert_array_equal(load_image(tmp_path / "opaque.png"), np.asarray(composited.convert("RGB")))


@pytest.mark.parametrize("name", ["probes/obama1.jpg", "misc/lin-manuel-miranda.png"])
@pytest.mark.parametrize("scale", [0.37, 1.0, 2.0])
@pytest.mark.parametrize("gray", [False, True])
def test_a_decoded_photo_resizes_to_what_its_pixels_would(faces_dir, name, scale, gray):
    photo = decode_photo(faces_dir / name)
    np.testing.assert_array_equal(photo.pixels, load_image(faces_dir / name))
    np.testing.assert_array_equal(resize_image(photo, scale, gray=gray), resize_image(photo.pixels, scale, gray=gray))

def test_exif_orientation_is_honoured(tmp_path, rgb):
    # Stored rotated 90 degrees clockwise, with the EXIF tag that says "rotate back when displaying".
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rot.png", exif=exif)
    image = load_image(tmp_path / "rot.png")
    assert image.shape == rgb.shape
    np.testing.assert_array_equal(image, rgb)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "I;16", "LA"])
def test_other_modes_convert_to_rgb(tmp_path, rgb, mode):
    src = Image.fromarray(rgb)
    if mode == "I;16":
        gray = np.asarray(src.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(gray)
        suffix = ".png"
    else:
        im = src.convert(mode)
        suffix = ".tiff" if mode == "CMYK" else ".png"
    im.save(tmp_path / f"x{suffix}")
    image = load_image(tmp_path / f"x{suffix}")
    assert image.shape == rgb.shape and image.dtype == np.uint8
    # Same picture, whatever the storage: close to the grayscale or colour original on average.
    gray = np.asarray(src.convert("L"), dtype=float)
    assert abs(image.mean(axis=2) - gray).mean() < 12


def test_sixteen_bit_values_are_scaled_not_clipped(tmp_path, rgb):
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    image = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(image[..., 0], gray)


def test_truncated_file_error_names_the_file(tmp_path, faces_dir):
    data = (faces_dir / "misc" / "obama_small.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated image"):
        load_image(tmp_path / "cut.jpg")


def test_not_an_image_error_names_the_file(tmp_path):
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(ImageError, match=r"fake\.jpg: not an image"):
        load_image(tmp_path / "fake.jpg")


def test_folder_layout_lists_identities_and_counts_other_files(tmp_path):
    for who in ("ann", "bob"):
        (tmp_path / who).mkdir()
        (tmp_path / who / "1.JPG").write_bytes(b"x")
    (tmp_path / "bob" / "deep").mkdir()
    (tmp_path / "bob" / "deep" / "2.webp").write_bytes(b"x")
    (tmp_path / "ann" / "notes.txt").write_text("x")
    (tmp_path / "loose.jpg").write_bytes(b"x")
    (tmp_path / "ann" / ".hidden.jpg").write_bytes(b"x")
    found = list_photos(tmp_path)
    assert [(p.source, p.identity) for p in found.photos] == [
        ("ann/1.JPG", "ann"), ("bob/1.JPG", "bob"), ("bob/deep/2.webp", "bob"),
    ]
    assert sorted(found.ignored) == [("ann/notes.txt", "not an image file"), ("loose.jpg", "not inside an identity folder")]


def test_csv_layout(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,identity\na.jpg,ann\nsub/b.png,bob\n")
    found = list_photos(tmp_path / "list.csv")
    assert [(p.source, p.identity, p.path) for p in found.photos] == [
        ("a.jpg", "ann", tmp_path / "a.jpg"), ("sub/b.png", "bob", tmp_path / "sub" / "b.png"),
    ]


def test_csv_errors_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("path,identity\na.jpg,\n")
    with pytest.raises(InvalidInputError, match=r"bad\.csv:2: every row needs a path and an identity"):
        list_photos(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("file,who\na.jpg,ann\n")
    with pytest.raises(InvalidInputError, match="'path' and 'identity'"):
        list_photos(tmp_path / "nohead.csv")


def test_probes_from_files_folders_globs_and_lists(tmp_path, faces_dir):
    (tmp_path / "probes.txt").write_text(f"{faces_dir / 'probes' / 'obama1.jpg'}\n# a comment\n")
    found = gather_photos([faces_dir / "misc" / "obama_small.jpg", str(faces_dir / "probes" / "*.jpg"),
                           tmp_path / "probes.txt"], labelled=False)
    names = [p.path.name for p in found.photos]
    assert names[0] == "obama_small.jpg"
    assert sorted(names[1:]) == sorted(p.name for p in (faces_dir / "probes").glob("*.jpg"))  # obama1 not repeated
    with pytest.raises(InvalidInputError, match="no file matches"):
        gather_photos([str(tmp_path / "*.jpg")], labelled=False)


def _stored_rotated(upright: np.ndarray, path, orientation: int = 6) -> None:
    """Save ``upright`` as a camera would: pixels turned, and the EXIF tag that says how to turn them back."""
    k = {6: 1, 8: -1, 3: 2}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=k))).save(path, quality=95, exif=exif)


@pytest.fixture(scope="module")
def big(faces_dir):
    return load_image(faces_dir / "probes" / "obama1.jpg")  # 1480 x 832


def _close(a: np.ndarray, b: np.ndarray, mean: float = 4.0) -> bool:
    return a.shape == b.shape and np.abs(a.astype(float) - b.astype(float)).mean() < mean


def _shrunk(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * s), round(h * s)), Image.BILINEAR))


@pytest.mark.parametrize("side", [740, 370, 185, 300])
def test_a_jpeg_decoded_at_reduced_scale_is_the_photo_shrunk(faces_dir, big, side):
    small = load_image(faces_dir / "probes" / "obama1.jpg", max_side=side)
    assert max(small.shape[:2]) == side and small.dtype == np.uint8
    assert _close(small, _shrunk(big, side))


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_reduced_decoding_honours_exif_orientation(tmp_path, big, orientation):
    _stored_rotated(big, tmp_path / "turned.jpg", orientation)
    full = load_image(tmp_path / "turned.jpg")
    small = load_image(tmp_path / "turned.jpg", max_side=370)
    assert full.shape == big.shape and _close(full, big)
    assert small.shape == (208, 370, 3) and _close(small, _shrunk(big, 370))


def test_reduced_decoding_of_other_formats_and_small_photos(tmp_path, faces_dir, big):
    Image.fromarray(big).save(tmp_path / "big.png")
    assert _close(load_image(tmp_path / "big.png", max_side=370), _shrunk(big, 370), mean=1.0)
    small = faces_dir / "misc" / "obama_small.jpg"  # 320 x 240: nothing to reduce
    np.testing.assert_array_equal(load_image(small, max_side=640), load_image(small))
    with pytest.raises(ImageError, match=r"nothing\.jpg: no such file"):
        load_image(tmp_path / "nothing.jpg", max_side=64)


def test_a_thumbnail_decodes_only_what_it_needs_and_shows_the_face(tmp_path, big):
    from gallery.embed import face_thumbnail

    _stored_rotated(big, tmp_path / "turned.jpg")
    box = (569, 238, 940, 610)  # obama1.jpg's face, in upright full-size pixels
    thumb = face_thumbnail(tmp_path / "turned.jpg", box, size=64)
    side = 372 * 1.4
    cx, cy = (569 + 940) / 2, (238 + 610) / 2
    want = Image.fromarray(big).crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    assert thumb.shape == (64, 64, 3) and _close(thumb, np.asarray(want.resize((64, 64), Image.BILINEAR)), mean=8.0)
    with pytest.raises(ImageError, match=r"gone\.jpg: no such file"):
        face_thumbnail(tmp_path / "gone.jpg", box)


def test_jpegs_are_decoded_at_reduced_scale_by_libjpeg(monkeypatch, faces_dir):
    from PIL import JpegImagePlugin

    decoded = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = draft(self, mode, size)
        decoded.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    image = load_image(faces_dir / "probes" / "obama1.jpg", max_side=185)
    assert decoded == [(185, 104)] and image.shape == (104, 185, 3)  # 1480 x 832 at libjpeg's 1/8
