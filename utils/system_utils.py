"""File-system helpers: atomic writes so a killed run never leaves a half-written file."""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """Atomic JSON write; NaN/Infinity are refused so the file stays valid JSON."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")


def write_file(path, data):
    """Atomic write of bytes or text."""
    with atomic_path(path) as tmp:
        if isinstance(data, (bytes, bytearray)):
            with open(tmp, "wb") as f:
                f.write(data)
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(data)


def search_for_max_iteration(folder):
    """Largest N among ``iteration_N`` entries of ``folder`` (None when there are none)."""
    if not os.path.isdir(folder):
        return None
    its = [int(n.split("_")[-1]) for n in os.listdir(folder)
           if n.startswith("iteration_") and n.split("_")[-1].isdigit()]
    return max(its) if its else None
