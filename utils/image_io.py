"""Reading image files (no torch: convert.py uses it too)."""
import errno
import time

import cv2
import numpy as np

from utils.errors import UserError

# failures of a read that can pass (descriptors or memory short while many processes load images at once)
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.EINTR, errno.EIO}


def read_image_file(path, what="image", flags=cv2.IMREAD_UNCHANGED, retry_s=0.5):
    """cv2.imread that says why it failed: the file's OSError (missing, no permission, ...) or that OpenCV could
    not decode it. A failed read or decode is tried once more after ``retry_s`` seconds when it may pass (a
    transient OSError, or a decode failure, which is also what OpenCV returns when it runs out of memory)."""
    data = b""
    for attempt in (0, 1):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            if attempt == 0 and exc.errno in _TRANSIENT:
                time.sleep(retry_s)
                continue
            raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
        if not data:
            raise UserError(f"cannot read {what} {path}: the file is empty")
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if arr is not None:
            return arr
        if attempt == 0:
            time.sleep(retry_s)
    raise UserError(f"cannot read {what} {path}: OpenCV cannot decode its {len(data)} bytes (not an image, or cut "
                    f"short)")
