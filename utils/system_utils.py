"""File-system helpers: atomic writes so a killed run never leaves a half-written file."""
import contextlib
import json
import os
import re
import secrets

# our temporary files: .<name>.<pid>-<6 hex>.tmp (older versions: .<name>.<8 mkstemp characters>.tmp), and
# render.py's video in progress, .ours_<it>.partial.<ext>
_TMP_NAME = re.compile(r"^\..+\.(?:(?P<pid>\d+)-[0-9a-f]{6}|[a-z0-9_]{8})\.tmp$|^\.ours_\d+\.partial\.\w+$")
_ITERATION_DIR = re.compile(r"^iteration_\d+$")


def _create_exclusive(path):
    """Create ``path`` (must not exist) with mode 0666 & ~umask, as open() would; the caller writes it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file is created with the user's umask (tempfile.mkstemp's 0600 would carry over to
    the final file), named .<name>.<pid>-<random>.tmp so that sweep_stale_temp_files can tell it apart.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for _ in range(100):
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
        try:
            _create_exclusive(tmp)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def sweep_stale_temp_files(folder):
    """Remove what killed runs left in ``folder`` (recursively): our temporary files whose process is gone,
    then iteration_<N> folders that are empty. Returns the removed paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for root, dirs, files in os.walk(folder, topdown=False):
        for f in files:
            m = _TMP_NAME.match(f)
            if m and not (m.group("pid") and _pid_alive(int(m.group("pid")))):
                path = os.path.join(root, f)
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError:
                    pass
        for d in dirs:
            path = os.path.join(root, d)
            if _ITERATION_DIR.match(d) and os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
                try:
                    os.rmdir(path)
                    removed.append(path)
                except OSError:
                    pass
    return removed


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


def saved_iterations(folder, holding=None):
    """Sorted N of the ``iteration_N`` folders in ``folder`` (only those holding the file ``holding`` when given;
    [] when ``folder`` does not exist)."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(n.split("_")[1]) for n in os.listdir(folder) if _ITERATION_DIR.fullmatch(n)
                  and (holding is None or os.path.isfile(os.path.join(folder, n, holding))))


def search_for_max_iteration(folder):
    """Largest N among ``iteration_N`` entries of ``folder`` (None when there are none)."""
    its = saved_iterations(folder)
    return its[-1] if its else None
