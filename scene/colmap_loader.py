"""Read and write COLMAP sparse models (cameras, images, points3D), binary and text.

Formats follow COLMAP's documentation (https://colmap.github.io/format.html), all little-endian:

cameras.bin    uint64 num_cameras, then per camera:
               uint32 camera_id, int32 model_id, uint64 width, uint64 height, float64 params[num_params(model)]
images.bin     uint64 num_reg_images, then per image:
               uint32 image_id, float64 qvec[4] (w, x, y, z), float64 tvec[3], uint32 camera_id,
               name (bytes, NUL-terminated), uint64 num_points2D,
               num_points2D x (float64 x, float64 y, int64 point3D_id)   (-1 = no 3D point)
points3D.bin   uint64 num_points, then per point:
               uint64 point3D_id, float64 xyz[3], uint8 rgb[3], float64 error, uint64 track_length,
               track_length x (uint32 image_id, uint32 point2D_idx)

cameras.txt    CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]
images.txt     two lines per image: IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME
                                    POINTS2D[] as (X Y POINT3D_ID)   (this line may be empty)
points3D.txt   POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID POINT2D_IDX)
Lines starting with '#' are comments.

(qvec, tvec) map world to camera: x_cam = R(qvec) @ x_world + tvec; the camera looks along +z with x to the
right and y down; pixel (u, v) = (fx * x / z + cx, fy * y / z + cy) with the top-left pixel's centre at (0.5, 0.5).

A broken file (empty, truncated, malformed line, unknown camera model) raises ``utils.errors.UserError`` naming the
file and the fix, never a bare struct.error or IndexError.
"""
import os
import struct
from collections import namedtuple

import numpy as np

from utils.errors import UserError
from utils.system_utils import write_file

CameraModel = namedtuple("CameraModel", ["model_id", "model_name", "num_params"])

# Ids and parameter counts as in COLMAP's src/colmap/sensor/models.h (ids 0..10 are the classic set).
CAMERA_MODELS = (
    CameraModel(0, "SIMPLE_PINHOLE", 3),  # f, cx, cy
    CameraModel(1, "PINHOLE", 4),  # fx, fy, cx, cy
    CameraModel(2, "SIMPLE_RADIAL", 4),  # f, cx, cy, k
    CameraModel(3, "RADIAL", 5),  # f, cx, cy, k1, k2
    CameraModel(4, "OPENCV", 8),  # fx, fy, cx, cy, k1, k2, p1, p2
    CameraModel(5, "OPENCV_FISHEYE", 8),  # fx, fy, cx, cy, k1, k2, k3, k4
    CameraModel(6, "FULL_OPENCV", 12),  # fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6
    CameraModel(7, "FOV", 5),  # fx, fy, cx, cy, omega
    CameraModel(8, "SIMPLE_RADIAL_FISHEYE", 4),  # f, cx, cy, k
    CameraModel(9, "RADIAL_FISHEYE", 5),  # f, cx, cy, k1, k2
    CameraModel(10, "THIN_PRISM_FISHEYE", 12),  # fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, sx1, sy1
    # Newer COLMAP releases (3.10+ / 4.x):
    CameraModel(11, "RAD_TAN_THIN_PRISM_FISHEYE", 16),
    CameraModel(12, "SIMPLE_DIVISION", 4),  # f, cx, cy, k
    CameraModel(13, "DIVISION", 5),  # fx, fy, cx, cy, k
    CameraModel(14, "SIMPLE_FISHEYE", 3),  # f, cx, cy
    CameraModel(15, "FISHEYE", 4),  # fx, fy, cx, cy
    CameraModel(16, "EUCM", 6),  # fx, fy, cx, cy, alpha, beta
)
CAMERA_MODEL_IDS = {m.model_id: m for m in CAMERA_MODELS}
CAMERA_MODEL_NAMES = {m.model_name: m for m in CAMERA_MODELS}

Camera = namedtuple("Camera", ["id", "model", "width", "height", "params"])
Image = namedtuple("Image", ["id", "qvec", "tvec", "camera_id", "name", "xys", "point3D_ids"])
Point3D = namedtuple("Point3D", ["id", "xyz", "rgb", "error", "image_ids", "point2D_idxs"])

MODEL_FILES = ("cameras", "images", "points3D")
_FIX = "re-export the model with COLMAP"

_U64 = struct.Struct("<Q")
_CAM_HEAD = struct.Struct("<IiQQ")  # camera_id, model_id, width, height
_IMG_HEAD = struct.Struct("<I4d3dI")  # image_id, qvec, tvec, camera_id
_PT_HEAD = struct.Struct("<Q3d3BdQ")  # point3D_id, xyz, rgb, error, track_length
_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])  # 24 bytes
_TRACK_DTYPE = np.dtype([("image_id", "<u4"), ("point2D_idx", "<u4")])  # 8 bytes
_PT_HEAD_DTYPE = np.dtype(
    [("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"), ("track_len", "<u8")]
)  # packed, 51 bytes
assert _PT_HEAD_DTYPE.itemsize == _PT_HEAD.size == 51


# --------------------------------------------------------------------------------------------------------------
# rotations


def qvec2rotmat(qvec):
    """Unit quaternion(s) (w, x, y, z) [..., 4] -> rotation matrix [..., 3, 3]. The quaternion is normalised first."""
    q = np.asarray(qvec, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"qvec must have 4 components (w, x, y, z), got shape {q.shape}")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(~np.isfinite(norm)) or np.any(norm == 0):
        raise ValueError("qvec must be a finite, non-zero quaternion")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def rotmat2qvec(R):
    """Rotation matrix (or matrices) [..., 3, 3] -> unit quaternion(s) (w, x, y, z) [..., 4] with w >= 0.

    Uses the symmetric 4x4 eigenvector construction (Bar-Itzhack), which also gives the nearest rotation's
    quaternion for a slightly non-orthogonal input.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must be [..., 3, 3], got shape {R.shape}")
    r = {f"{i}{j}": R[..., i, j] for i in range(3) for j in range(3)}
    K = np.stack(
        [
            r["00"] - r["11"] - r["22"], r["10"] + r["01"], r["20"] + r["02"], r["21"] - r["12"],
            r["10"] + r["01"], r["11"] - r["00"] - r["22"], r["21"] + r["12"], r["02"] - r["20"],
            r["20"] + r["02"], r["21"] + r["12"], r["22"] - r["00"] - r["11"], r["10"] - r["01"],
            r["21"] - r["12"], r["02"] - r["20"], r["10"] - r["01"], r["00"] + r["11"] + r["22"],
        ],
        axis=-1,
    ).reshape(R.shape[:-2] + (4, 4)) / 3.0
    _, vecs = np.linalg.eigh(K)
    xyzw = vecs[..., :, -1]  # eigenvector of the largest eigenvalue: (x, y, z, w)
    q = np.concatenate([xyzw[..., 3:4], xyzw[..., 0:3]], axis=-1)
    q = np.where(q[..., :1] < 0, -q, q)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------------------
# helpers


def _corrupt(path, detail):
    return UserError(f"{path} is truncated or corrupt ({detail}); {_FIX}")


def _malformed(path, lineno, what, reason, line):
    shown = line if len(line) <= 80 else line[:77] + "..."
    return UserError(
        f"{path}:{lineno}: malformed {what} line ({reason}): '{shown}'; fix the line or {_FIX}"
    )


def _suffix(path):
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".bin", ".txt"):
        raise UserError(f"{path}: unknown COLMAP file type '{ext}'; expected a .bin or .txt file")
    return ext


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; point -s at a scene folder with sparse/0 from COLMAP") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a COLMAP model file; pass the file inside it") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror}); check the file's permissions") from None


def _read_text(path):
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _BinReader:
    """Sequential little-endian reader that turns a short read into a UserError naming the file."""

    def __init__(self, path, data):
        self.path = path
        self.data = data
        self.pos = 0

    def need(self, nbytes, what):
        if self.pos + nbytes > len(self.data):
            if len(self.data) == 0:
                raise UserError(f"{self.path} is empty (expected at least {nbytes} bytes for {what}); {_FIX}")
            raise _corrupt(
                self.path,
                f"expected {nbytes} bytes for {what} at byte {self.pos}, but the file has {len(self.data)} bytes",
            )

    def unpack(self, st, what):
        self.need(st.size, what)
        out = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return out

    def count(self, what, min_record_bytes):
        (n,) = self.unpack(_U64, f"the number of {what}")
        left = len(self.data) - self.pos
        if n * min_record_bytes > left:
            raise _corrupt(
                self.path,
                f"expected {n} {what} of at least {min_record_bytes} bytes each = {n * min_record_bytes} bytes "
                f"after the header, but only {left} bytes follow",
            )
        return n

    def array(self, dtype, n, what):
        nbytes = dtype.itemsize * n
        self.need(nbytes, what)
        out = np.frombuffer(self.data, dtype=dtype, count=n, offset=self.pos).copy()
        self.pos += nbytes
        return out

    def cstring(self, what):
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise _corrupt(self.path, f"{what} at byte {self.pos} has no terminating NUL byte")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        return raw.decode("utf-8", errors="surrogateescape")


def _data_lines(text):
    """(1-based line number, stripped line) for every non-empty, non-comment line."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def _f(x):
    """Shortest text that reads back to the same float64."""
    return repr(float(x))


# --------------------------------------------------------------------------------------------------------------
# cameras


def _make_camera(where, camera_id, model, width, height, params):
    """``where`` is 'file:line', used to prefix errors."""
    m = CAMERA_MODEL_NAMES.get(model) if isinstance(model, str) else CAMERA_MODEL_IDS.get(model)
    if m is None:
        known = ", ".join(f"{c.model_name}={c.model_id}" for c in CAMERA_MODELS)
        raise UserError(f"{where}: unknown camera model {model!r} (known: {known}); {_FIX}")
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (m.num_params,):
        raise UserError(
            f"{where}: {params.size} parameters given but camera model {m.model_name} takes "
            f"{m.num_params}; {_FIX}"
        )
    return Camera(id=int(camera_id), model=m.model_name, width=int(width), height=int(height), params=params)


def _read_cameras_bin(path):
    r = _BinReader(path, _read_bytes(path))
    n = r.count("cameras", _CAM_HEAD.size)
    cameras = {}
    for i in range(n):
        cam_id, model_id, width, height = r.unpack(_CAM_HEAD, f"camera {i + 1} of {n}")
        m = CAMERA_MODEL_IDS.get(model_id)
        if m is None:
            raise _corrupt(path, f"camera {cam_id} has unknown camera model id {model_id}")
        params = r.array(np.dtype("<f8"), m.num_params, f"the {m.num_params} parameters of camera {cam_id}")
        cameras[cam_id] = Camera(id=cam_id, model=m.model_name, width=width, height=height, params=params)
    return cameras


def _read_cameras_txt(path):
    cameras = {}
    for lineno, line in _data_lines(_read_text(path)):
        tok = line.split()
        if len(tok) < 4:
            raise _malformed(path, lineno, "camera", "need CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", line)
        try:
            cam_id, width, height = int(tok[0]), int(tok[2]), int(tok[3])
            params = np.array([float(t) for t in tok[4:]], dtype=np.float64)
        except ValueError as exc:
            raise _malformed(path, lineno, "camera", str(exc), line) from None
        cameras[cam_id] = _make_camera(f"{path}:{lineno}", cam_id, tok[1], width, height, params)
    return cameras


def read_cameras(path):
    """cameras.bin / cameras.txt -> {camera_id: Camera}."""
    return _read_cameras_bin(path) if _suffix(path) == ".bin" else _read_cameras_txt(path)


def _check_camera(cam):
    m = CAMERA_MODEL_NAMES.get(cam.model)
    if m is None:
        raise ValueError(f"camera {cam.id}: unknown camera model {cam.model!r}")
    params = np.asarray(cam.params, dtype=np.float64).reshape(-1)
    if params.size != m.num_params:
        raise ValueError(f"camera {cam.id}: model {cam.model} takes {m.num_params} params, got {params.size}")
    return m, params


def _write_records(records, path, pack, write_txt):
    """{id: record} -> ``path`` (by suffix), written atomically. The .bin layout of all three files: the number of
    records (uint64), then each record as ``pack`` packs it; .txt: ``write_txt(records, path)``."""
    if _suffix(path) == ".bin":
        write_file(path, b"".join([_U64.pack(len(records))] + [pack(r) for r in records.values()]))
    else:
        write_txt(records, path)


def _camera_bytes(cam):
    m, params = _check_camera(cam)
    return _CAM_HEAD.pack(int(cam.id), m.model_id, int(cam.width), int(cam.height)) + params.astype("<f8").tobytes()


def _write_cameras_txt(cameras, path):
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cameras)}",
    ]
    for cam in cameras.values():
        _, params = _check_camera(cam)
        lines.append(" ".join([str(int(cam.id)), cam.model, str(int(cam.width)), str(int(cam.height))]
                              + [_f(p) for p in params]))
    write_file(path, "\n".join(lines) + "\n")


def write_cameras(cameras, path):
    """{camera_id: Camera} -> cameras.bin / cameras.txt (by suffix), written atomically."""
    _write_records(cameras, path, _camera_bytes, _write_cameras_txt)


# --------------------------------------------------------------------------------------------------------------
# images


def _read_images_bin(path):
    r = _BinReader(path, _read_bytes(path))
    n = r.count("images", _IMG_HEAD.size + 1 + 8)
    images = {}
    for i in range(n):
        head = r.unpack(_IMG_HEAD, f"image {i + 1} of {n}")
        image_id = head[0]
        name = r.cstring(f"the name of image {image_id}")
        (k,) = r.unpack(_U64, f"the number of 2D points of image {image_id} ({name})")
        pts = r.array(_POINT2D_DTYPE, k, f"the {k} 2D points of image {image_id} ({name})")
        images[image_id] = Image(
            id=image_id,
            qvec=np.array(head[1:5], dtype=np.float64),
            tvec=np.array(head[5:8], dtype=np.float64),
            camera_id=head[8],
            name=name,
            xys=np.stack([pts["x"], pts["y"]], axis=-1).astype(np.float64).reshape(-1, 2),
            point3D_ids=pts["id"].astype(np.int64),
        )
    return images


def _read_images_txt(path):
    images = {}
    lines = _read_text(path).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        lineno = i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        tok = line.split(None, 9)
        if len(tok) < 10:
            raise _malformed(path, lineno, "image", "need IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", line)
        try:
            image_id = int(tok[0])
            vals = [float(t) for t in tok[1:8]]
            camera_id = int(tok[8])
        except ValueError as exc:
            raise _malformed(path, lineno, "image", str(exc), line) from None
        name = tok[9].strip()
        # The next line holds the 2D points (it may be empty); a missing last line means no points.
        pline = lines[i].strip() if i < len(lines) else ""
        plineno = i + 1
        i += 1
        ptok = pline.split()
        if pline.startswith("#") or len(ptok) % 3 != 0:
            raise _malformed(path, plineno, "POINTS2D", "need triples X Y POINT3D_ID after each image line", pline)
        try:
            xys = np.array([float(t) for t in ptok[0::3]] + [float(t) for t in ptok[1::3]],
                           dtype=np.float64).reshape(2, -1).T.copy()
            ids = np.array([int(t) for t in ptok[2::3]], dtype=np.int64)
        except (ValueError, OverflowError) as exc:
            raise _malformed(path, plineno, "POINTS2D", str(exc), pline) from None
        images[image_id] = Image(
            id=image_id, qvec=np.array(vals[0:4]), tvec=np.array(vals[4:7]), camera_id=camera_id,
            name=name, xys=xys.reshape(-1, 2), point3D_ids=ids,
        )
    return images


def read_images(path):
    """images.bin / images.txt -> {image_id: Image}."""
    return _read_images_bin(path) if _suffix(path) == ".bin" else _read_images_txt(path)


def _image_points(img):
    xys = np.asarray(img.xys, dtype=np.float64).reshape(-1, 2)
    ids = np.asarray(img.point3D_ids, dtype=np.int64).reshape(-1)
    if len(xys) != len(ids):
        raise ValueError(f"image {img.id}: {len(xys)} xys but {len(ids)} point3D_ids")
    return xys, ids


def _image_bytes(img):
    xys, ids = _image_points(img)
    name = img.name.encode("utf-8", errors="surrogateescape")
    if b"\x00" in name:
        raise ValueError(f"image {img.id}: name contains a NUL byte")
    pts = np.empty(len(ids), dtype=_POINT2D_DTYPE)
    pts["x"], pts["y"], pts["id"] = xys[:, 0], xys[:, 1], ids
    head = _IMG_HEAD.pack(int(img.id), *map(float, img.qvec), *map(float, img.tvec), int(img.camera_id))
    return head + name + b"\x00" + _U64.pack(len(ids)) + pts.tobytes()


def _write_images_txt(images, path):
    n_obs = sum(len(np.asarray(img.point3D_ids).reshape(-1)) for img in images.values())
    mean_obs = n_obs / len(images) if images else 0
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(images)}, mean observations per image: {mean_obs}",
    ]
    for img in images.values():
        xys, ids = _image_points(img)
        if any(c in img.name for c in "\n\r"):
            raise ValueError(f"image {img.id}: name contains a line break")
        lines.append(" ".join([str(int(img.id))] + [_f(v) for v in img.qvec] + [_f(v) for v in img.tvec]
                              + [str(int(img.camera_id)), img.name]))
        lines.append(" ".join(f"{_f(x)} {_f(y)} {int(p)}" for (x, y), p in zip(xys, ids)))
    write_file(path, "\n".join(lines) + "\n")


def write_images(images, path):
    """{image_id: Image} -> images.bin / images.txt (by suffix), written atomically."""
    _write_records(images, path, _image_bytes, _write_images_txt)


# --------------------------------------------------------------------------------------------------------------
# points3D


def _points_bin_records(path):
    """points3D.bin -> (its bytes, the headers [N] as _PT_HEAD_DTYPE, each header's byte offset [N]); a point's
    track (track_len x _TRACK_DTYPE) follows its header."""
    data = _read_bytes(path)
    n = _BinReader(path, data).count("points", _PT_HEAD.size)
    rec = _PT_HEAD.size
    if len(data) == 8 + n * rec:
        # Every record is exactly its 51-byte header, so no point can have a track: read them all at once.
        heads = np.frombuffer(data, dtype=_PT_HEAD_DTYPE, count=n, offset=8)
        if np.any(heads["track_len"] != 0):
            raise _corrupt(path, "a point claims a track but the file has no room for it")
        return data, heads, 8 + rec * np.arange(n, dtype=np.int64)
    # Tracks vary in length: walk the records to find where each header starts, then gather them at once.
    offsets = np.empty(n, dtype=np.int64)
    pos, size = 8, len(data)
    for i in range(n):
        if pos + rec > size:
            raise _corrupt(path, f"expected {rec} bytes for point {i + 1} of {n} at byte {pos}, "
                                 f"but the file has {size} bytes")
        offsets[i] = pos
        pos += rec + 8 * _U64.unpack_from(data, pos + rec - 8)[0]
    if pos > size:
        raise _corrupt(path, f"the track of point {n} of {n} ends at byte {pos}, but the file has {size} bytes")
    raw = np.frombuffer(data, dtype=np.uint8)
    heads = raw[offsets[:, None] + np.arange(rec)].reshape(-1).view(_PT_HEAD_DTYPE)
    return data, heads, offsets


def _read_points3D_bin(path):
    data, heads, offsets = _points_bin_records(path)
    points = {}
    for (pid, xyz, rgb, err, tlen), off in zip(heads.tolist(), offsets.tolist()):
        track = np.frombuffer(data, dtype=_TRACK_DTYPE, count=tlen, offset=off + _PT_HEAD.size)
        points[pid] = Point3D(
            id=pid, xyz=np.array(xyz), rgb=np.array(rgb, dtype=np.uint8), error=err,
            image_ids=track["image_id"].astype(np.int64), point2D_idxs=track["point2D_idx"].astype(np.int64),
        )
    return points


def _parse_point_line(path, lineno, line):
    tok = line.split()
    if len(tok) < 8 or (len(tok) - 8) % 2:
        raise _malformed(
            path, lineno, "point", "need POINT3D_ID X Y Z R G B ERROR then (IMAGE_ID POINT2D_IDX) pairs", line
        )
    try:
        pid = int(tok[0])
        xyz = np.array([float(t) for t in tok[1:4]])
        rgb = [int(t) for t in tok[4:7]]
        err = float(tok[7])
        track = np.array([int(t) for t in tok[8:]], dtype=np.int64).reshape(-1, 2)
    except ValueError as exc:
        raise _malformed(path, lineno, "point", str(exc), line) from None
    if not all(0 <= c <= 255 for c in rgb):
        raise _malformed(path, lineno, "point", "R G B must be integers in 0..255", line)
    return Point3D(id=pid, xyz=xyz, rgb=np.array(rgb, dtype=np.uint8), error=err,
                   image_ids=track[:, 0].copy(), point2D_idxs=track[:, 1].copy())


def _read_points3D_txt(path):
    points = {}
    for lineno, line in _data_lines(_read_text(path)):
        p = _parse_point_line(path, lineno, line)
        points[p.id] = p
    return points


def read_points3D(path):
    """points3D.bin / points3D.txt -> {point3D_id: Point3D}."""
    return _read_points3D_bin(path) if _suffix(path) == ".bin" else _read_points3D_txt(path)


def _points_arrays_bin(path):
    _, heads, _ = _points_bin_records(path)
    return (heads["xyz"].astype(np.float64), heads["rgb"].astype(np.uint8), heads["error"].astype(np.float64))


def _points_arrays_txt(path):
    lines = [(lineno, line) for lineno, line in _data_lines(_read_text(path))]
    n = len(lines)
    try:
        rows = [line.split(None, 8) for _, line in lines]
        if any(len(t) < 8 for t in rows):
            raise ValueError("short line")
        if any(len(t) == 9 for t in rows):  # tracks present: only check they come in pairs
            if any(len(t) == 9 and len(t[8].split()) % 2 for t in rows):
                raise ValueError("odd track")
            rows = [t[:8] for t in rows]
        vals = np.array(rows, dtype=np.float64).reshape(n, 8)
        rgb = vals[:, 4:7]
        if np.any((rgb < 0) | (rgb > 255) | (rgb != np.round(rgb))):
            raise ValueError("bad colour")
    except ValueError:
        for lineno, line in lines:  # slow path only to find and name the bad line
            _parse_point_line(path, lineno, line)
        raise UserError(f"{path} could not be parsed as a COLMAP points3D.txt; {_FIX}") from None
    return vals[:, 1:4].copy(), vals[:, 4:7].astype(np.uint8), vals[:, 7].copy()


def read_points3D_arrays(path):
    """points3D.bin / points3D.txt -> (xyz [N,3] float64, rgb [N,3] uint8, error [N] float64), fast."""
    return _points_arrays_bin(path) if _suffix(path) == ".bin" else _points_arrays_txt(path)


def _point_track(p):
    image_ids = np.asarray(p.image_ids, dtype=np.int64).reshape(-1)
    idxs = np.asarray(p.point2D_idxs, dtype=np.int64).reshape(-1)
    if len(image_ids) != len(idxs):
        raise ValueError(f"point {p.id}: {len(image_ids)} image_ids but {len(idxs)} point2D_idxs")
    return image_ids, idxs


def _rgb_u8(rgb):
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        if np.any((rgb < 0) | (rgb > 255)):
            raise ValueError("rgb values must lie in 0..255")
        rgb = np.round(rgb).astype(np.uint8)
    return rgb


def _point_bytes(p):
    image_ids, idxs = _point_track(p)
    rgb = _rgb_u8(p.rgb).reshape(3)
    track = np.empty(len(image_ids), dtype=_TRACK_DTYPE)
    track["image_id"], track["point2D_idx"] = image_ids, idxs
    head = _PT_HEAD.pack(int(p.id), *map(float, p.xyz), *map(int, rgb), float(p.error), len(image_ids))
    return head + track.tobytes()


def _points_header(n, mean_track):
    return [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {n}, mean track length: {mean_track}",
    ]


def _write_points3D_txt(points3D, path):
    n_obs = 0
    body = []
    for p in points3D.values():
        image_ids, idxs = _point_track(p)
        n_obs += len(image_ids)
        rgb = _rgb_u8(p.rgb).reshape(3)
        fields = [str(int(p.id))] + [_f(v) for v in p.xyz] + [str(int(c)) for c in rgb] + [_f(p.error)]
        fields += [f"{int(a)} {int(b)}" for a, b in zip(image_ids, idxs)]
        body.append(" ".join(fields))
    mean_track = n_obs / len(points3D) if points3D else 0
    write_file(path, "\n".join(_points_header(len(points3D), mean_track) + body) + "\n")


def write_points3D(points3D, path):
    """{point3D_id: Point3D} -> points3D.bin / points3D.txt (by suffix), written atomically."""
    _write_records(points3D, path, _point_bytes, _write_points3D_txt)


def write_points3D_arrays(path, xyz, rgb, error=None):
    """Write points with ids 1..N, the given colours (uint8, or numbers in 0..255), errors (default 0) and no tracks."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    n = len(xyz)
    rgb = _rgb_u8(np.asarray(rgb).reshape(n, 3))
    error = np.zeros(n) if error is None else np.broadcast_to(np.asarray(error, dtype=np.float64), (n,))
    if _suffix(path) == ".bin":
        heads = np.zeros(n, dtype=_PT_HEAD_DTYPE)
        heads["id"] = np.arange(1, n + 1)
        heads["xyz"], heads["rgb"], heads["error"] = xyz, rgb, error
        write_file(path, _U64.pack(n) + heads.tobytes())
    else:
        body = [
            f"{i} {_f(x)} {_f(y)} {_f(z)} {r} {g} {b} {_f(e)}"
            for i, (x, y, z), (r, g, b), e in zip(range(1, n + 1), xyz.tolist(), rgb.tolist(), error.tolist())
        ]
        write_file(path, "\n".join(_points_header(n, 0) + body) + "\n")


# --------------------------------------------------------------------------------------------------------------
# whole models


def check_model(cameras, images, cameras_path, images_path):
    """Cameras with a positive size and finite parameters (a positive focal length for the pinhole models),
    at least one image, each with a finite, non-zero pose: else a UserError naming the file and the entry."""
    fix = "fix it or re-run convert.py"
    for cam in cameras.values():
        if cam.width < 1 or cam.height < 1:
            raise UserError(f"camera {cam.id} in {cameras_path} is {cam.width}x{cam.height} pixels: width and height "
                            f"must be at least 1; {fix}")
        params = np.asarray(cam.params, dtype=np.float64)
        if not np.isfinite(params).all():
            raise UserError(f"camera {cam.id} in {cameras_path} has NaN or infinite parameters "
                            f"({' '.join(map(str, params))}); {fix}")
        if cam.model in ("PINHOLE", "SIMPLE_PINHOLE"):
            focal = params[:2] if cam.model == "PINHOLE" else params[:1]
            if (focal <= 0).any():
                raise UserError(f"camera {cam.id} in {cameras_path} has focal length "
                                f"{' / '.join(map(str, focal))}: it must be positive; {fix}")
    if not images:
        raise UserError(f"{images_path} lists no images: a scene needs registered images (re-run convert.py)")
    for im in images.values():
        q, t = np.asarray(im.qvec, dtype=np.float64), np.asarray(im.tvec, dtype=np.float64)
        if not np.isfinite(q).all() or not np.isfinite(t).all() or not np.linalg.norm(q) > 0:
            raise UserError(f"image {im.name} (id {im.id}) in {images_path} has a NaN, infinite or zero pose "
                            f"(qvec {' '.join(map(str, q))}, tvec {' '.join(map(str, t))}); {fix}")


def check_points_finite(xyz, path):
    """A UserError naming ``path`` when a point has a NaN or infinite coordinate."""
    bad = ~np.isfinite(np.asarray(xyz, dtype=np.float64)).all(axis=1)
    if bad.any():
        raise UserError(f"{path}: {int(bad.sum())} of {len(bad)} points have NaN or infinite coordinates (the first "
                        f"is point number {int(np.flatnonzero(bad)[0]) + 1} in the file); remove them or re-run "
                        f"convert.py")


def detect_model_ext(sparse_dir):
    """'.bin' if cameras/images/points3D.bin all exist in ``sparse_dir``, else '.txt' if the .txt trio does,
    else a UserError naming the folder and what is missing."""
    sparse_dir = os.fspath(sparse_dir)
    if not os.path.isdir(sparse_dir):
        raise UserError(f"{sparse_dir} does not exist or is not a folder; a COLMAP scene needs sparse/0 with "
                        f"cameras, images and points3D (.bin or .txt): run COLMAP or convert.py first")
    for ext in (".bin", ".txt"):
        if all(os.path.isfile(os.path.join(sparse_dir, f + ext)) for f in MODEL_FILES):
            return ext
    found = sorted(f for f in os.listdir(sparse_dir) if os.path.splitext(f)[0] in MODEL_FILES)
    missing_bin = [f + ".bin" for f in MODEL_FILES if not os.path.isfile(os.path.join(sparse_dir, f + ".bin"))]
    missing_txt = [f + ".txt" for f in MODEL_FILES if not os.path.isfile(os.path.join(sparse_dir, f + ".txt"))]
    missing = missing_bin if len(missing_bin) <= len(missing_txt) else missing_txt
    raise UserError(
        f"{sparse_dir} has no complete COLMAP model (found: {', '.join(found) or 'nothing'}; missing: "
        f"{', '.join(missing)}); export all of cameras, images and points3D as .bin or as .txt from COLMAP"
    )


def read_model(sparse_dir):
    """sparse/0 folder -> (cameras dict, images dict, points3D dict); prefers .bin when the binary trio exists."""
    ext = detect_model_ext(sparse_dir)
    cameras = read_cameras(os.path.join(sparse_dir, "cameras" + ext))
    images = read_images(os.path.join(sparse_dir, "images" + ext))
    points3D = read_points3D(os.path.join(sparse_dir, "points3D" + ext))
    return cameras, images, points3D


def write_model(cameras, images, points3D, sparse_dir, ext=".bin"):
    """Write cameras, images and points3D{ext} into ``sparse_dir`` (created if needed); each file atomically."""
    if ext not in (".bin", ".txt"):
        raise ValueError(f"ext must be '.bin' or '.txt', got {ext!r}")
    sparse_dir = os.fspath(sparse_dir)
    os.makedirs(sparse_dir, exist_ok=True)
    write_cameras(cameras, os.path.join(sparse_dir, "cameras" + ext))
    write_images(images, os.path.join(sparse_dir, "images" + ext))
    write_points3D(points3D, os.path.join(sparse_dir, "points3D" + ext))
    return sparse_dir
