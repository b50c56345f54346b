"""utils.image_io.read_image_file: images decode as cv2.imread does; failures say why; passing ones are retried."""
import errno

import cv2
import numpy as np
import pytest

from utils import image_io
from utils.errors import UserError
from utils.image_io import read_image_file


@pytest.fixture
def naps(monkeypatch):
    slept = []
    monkeypatch.setattr(image_io.time, "sleep", slept.append)
    return slept


def test_reads_what_imread_reads(tmp_path, naps):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, img)
    assert np.array_equal(read_image_file(path), cv2.imread(path, cv2.IMREAD_UNCHANGED))
    assert read_image_file(path, flags=cv2.IMREAD_GRAYSCALE).shape == (5, 7) and naps == []


@pytest.mark.parametrize("content, reason, retried", [
    (None, "No such file", False), (b"", "the file is empty", False), (b"not an image", "cannot decode its 12 bytes",
                                                                          True)])
def test_failures_say_why(tmp_path, naps, content, reason, retried):
    path = tmp_path / "view_001.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_image_file(str(path), "depth map")
    msg = str(e.value)
    assert msg.startswith(f"cannot read depth map {path}:") and reason in msg
    assert naps == ([0.5] if retried else [])


def test_a_decode_that_fails_once_is_retried(tmp_path, naps, monkeypatch):
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, np.zeros((3, 3, 3), np.uint8))
    real, calls = cv2.imdecode, []
    monkeypatch.setattr(image_io.cv2, "imdecode", lambda *a: calls.append(1) or (None if len(calls) == 1 else real(*a)))
    assert read_image_file(path).shape == (3, 3, 3) and len(calls) == 2 and naps == [0.5]


def test_a_transient_os_error_is_retried_a_lasting_one_reported(tmp_path, naps, monkeypatch):
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, np.zeros((3, 3, 3), np.uint8))
    real, calls = open, []

    def flaky(p, mode="r"):
        calls.append(p)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(p, mode)
    monkeypatch.setattr(image_io, "open", flaky, raising=False)
    assert read_image_file(path).shape == (3, 3, 3) and len(calls) == 2 and naps == [0.5]

    def denied(p, mode="r"):
        raise OSError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(image_io, "open", denied, raising=False)
    with pytest.raises(UserError, match="Permission denied"):
        read_image_file(path)
    assert naps == [0.5]  # not retried


def test_a_scenes_images_decode_in_order_on_threads_and_the_first_bad_one_is_named(tmp_path, naps):
    from scene.dataset_readers import decode_images, load_image  # noqa: PLC0415
    rng = np.random.default_rng(1)
    paths = []
    for k in range(12):
        paths.append(str(tmp_path / f"{k:02d}.png"))
        cv2.imwrite(paths[-1], rng.integers(0, 256, (6 + k, 9, 3), dtype=np.uint8))
    want = [load_image(p) for p in paths]
    got = decode_images([(p,) for p in paths], workers=4)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(got, want))
    for bad in (3, 7):
        with open(paths[bad], "wb") as f:
            f.write(b"not an image")
    with pytest.raises(UserError, match="03.png"):  # the first bad one in order, however the threads ran
        decode_images([(p,) for p in paths], workers=4)
