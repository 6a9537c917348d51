"""Safe files: one atomic writer and one folder lock for everything both packages write.

- :func:`atomic_path` yields a temporary path in the destination's folder; on
  success the file is fsynced and renamed over the destination (then the folder
  is fsynced), on any failure the temporary file is removed. A full disk raises
  ``OSError`` saying "no space left on <path>".
- :func:`remove_stale_temps` deletes temporaries left by a killed writer.
- :class:`FolderLock` makes a second run into the same output folder refuse
  with a clear message instead of overwriting the first one's files; its
  ``.dynfit.lock`` file is removed when the run ends (also on failure).

Files get the permissions the umask gives a new file (0644 under umask
022), also when they replace one, so that colleagues can read them.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["FolderLockedError"]

TEMP_PREFIX = ".dynfit-tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                _fsync_file(p)
        _fsync_dir(path)
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _explain(err: OSError, path: Path) -> OSError:
    """A new OSError (same errno) whose message names ``path`` and the fix; others unchanged."""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return OSError(err.errno, f"no space left on {path.parent} while writing {path.name}; "
                                  "free some space or choose another folder")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OSError(
            err.errno,
            f"cannot write {path}: permission denied or read-only file system "
            "(choose a folder you can write to)",
        )
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        where = (
            f"{blocker} is a file, not a folder"
            if blocker
            else "a parent of it is a file, not a folder"
        )
        return OSError(err.errno, f"cannot write {path}: {where}; choose another path")
    if err.errno == errno.EISDIR:
        return OSError(err.errno, f"cannot write {path}: it is a folder; give a file name")
    if err.errno == errno.ENAMETOOLONG:
        return OSError(err.errno, f"cannot write {str(path)[:80]}...: the name is too long")
    return err


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc); else by setting and restoring
    it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - platforms without /proc
    os.umask(mask)
    return mask


def _give_mode(tmp: Path) -> None:
    """The mode a new file gets from the umask: 0666 & ~umask (mkstemp gives 0600)."""
    if tmp.is_dir() or tmp.is_symlink():
        return
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError:  # pragma: no cover - a file system without modes
        pass


def _nearly_full(folder: Path, margin: int = 64 * 1024) -> bool:
    """Whether the file system of ``folder`` has less than ``margin`` bytes left."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # pragma: no cover - no statvfs
        return False
    return st.f_bavail * st.f_frsize < margin


def ensure_folder(path) -> Path:
    """Create the folder ``path`` (and its parents); a clear OSError if a file is in the way or it
    cannot be written. Returns the path."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _explain(err, path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(
            errno.EACCES,
            f"cannot write into {path}: permission denied (choose a folder you can write to)",
        )
    return path


@contextlib.contextmanager
def atomic_path(path, *, suffix: str | None = None, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the destination's suffix (so writers that pick a format
    from it still work) unless ``suffix`` is given. ``directory=True`` is for writers
    that produce a folder (zarr stores): the old folder is replaced as a whole.
    Creates the parent folder. Any exception removes the temporary file or folder.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _explain(err, path) from None
    sfx = path.suffix if suffix is None else suffix
    try:
        fd, name = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{path.stem}-", suffix=sfx, dir=path.parent
        )
    except OSError as err:
        raise _explain(err, path) from None
    os.close(fd)
    tmp = Path(name)
    if directory:
        tmp.unlink()
    try:
        yield tmp
        _give_mode(tmp)  # mkstemp made it 0600: readable by its owner only
        _fsync_tree(tmp)
        if directory and path.exists():
            old = path.with_name(f"{TEMP_PREFIX}{path.name}-old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        _remove(tmp)
        raise _explain(err, path) from None
    except Exception as err:
        # libraries such as netCDF/HDF5 report a full disk as their own error ("NetCDF: HDF error")
        full = _nearly_full(path.parent)
        _remove(tmp)
        if full:
            raise _explain(OSError(errno.ENOSPC, "No space left on device"), path) from err
        raise
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (and raises ENOSPC on a full disk)
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    return path


def atomic_save(path, writer: Callable[[Path], object], *, directory: bool = False) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    path = Path(path)
    with atomic_path(path, directory=directory) as tmp:
        writer(tmp)
    return path


def remove_stale_temps(folder) -> list[Path]:
    """Delete temporaries that a killed writer left in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.glob(f"{TEMP_PREFIX}*"):
        _remove(p)
        gone.append(p)
    # the previous round's checkpoint writer used ".NAME.tmpPID"
    for p in folder.glob(".*.tmp[0-9]*"):
        _remove(p)
        gone.append(p)
    return gone


class FolderLockedError(RuntimeError):
    """Another live process writes into the same folder."""


class FolderLock:
    """An exclusive lock on an output folder (``<folder>/.dynfit.lock``, flock-based).

    Use as a context manager; a second process asking for the same folder gets
    :class:`FolderLockedError` naming the holder's pid. The lock dies with its
    process (kill -9 included), so a killed run never blocks a resume. Release
    (the end of the ``with`` block, also by an exception) removes the file;
    only a killed process leaves it, and the next run takes it over.
    """

    NAME = ".dynfit.lock"

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        ensure_folder(self.folder)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise _explain(err, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise FolderLockedError(
                    f"{self.folder} is in use by another dynfit run (pid {holder}); "
                    "wait for it to finish or choose another output folder"
                ) from None
            try:  # the holder before us may have removed the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        # the pid is for messages only (a full disk must not stop here)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):  # removed while still held: a waiter sees a new file
                os.unlink(self.path)
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
