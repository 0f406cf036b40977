"""On-disk cache for generated or converted data sets.

Location: ``$DEMON_OPTIM_CACHE`` if set, else ``$XDG_CACHE_HOME/demon-optim``, else
``~/.cache/demon-optim``. Files are written atomically (temporary file in the same folder,
then ``os.replace``) so that concurrent workers never read a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

import numpy as np


def cache_dir() -> pathlib.Path:
    """The folder that holds cached data (not created here)."""
    explicit = os.environ.get("DEMON_OPTIM_CACHE")
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "demon-optim"


def save_arrays(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an ``.npz`` file, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; let other users read a shared cache
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise


def load_arrays(path: pathlib.Path) -> dict[str, np.ndarray] | None:
    """The arrays in ``path``, or None if the file is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception:  # missing (OSError), truncated (BadZipFile), corrupt (ValueError), ...
        return None


def arrays_sha256(arrays: dict[str, np.ndarray], decimals: int | None = None) -> str:
    """sha256 over the arrays' names, shapes, dtypes and bytes, in name order.

    With ``decimals``, floating arrays are rounded to that many decimals and cast to
    float32 first, so the digest does not depend on last-bit differences between library
    versions or platforms.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        if decimals is not None and np.issubdtype(array.dtype, np.floating):
            array = np.round(array.astype(np.float64), decimals).astype("<f4")
        elif np.issubdtype(array.dtype, np.integer):
            array = array.astype("<i8")
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
