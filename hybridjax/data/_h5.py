"""Lazy, per-thread HDF5 handles (h5py objects must not be shared across threads or pickled)."""
from __future__ import annotations

import collections
import threading

import h5py

from .errors import DataError


def open_h5(path) -> h5py.File:
    """Opens ``path`` read-only, turning a missing or non-HDF5 file into a DataError naming it."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist") from err
    except OSError as err:
        raise DataError(path, f"cannot be opened as HDF5 ({err})") from err


class HandlePool:
    """Keeps at most ``max_open`` files open per thread (least recently used is closed first).

    Each loader worker thread gets its own handles, so reads never race on one ``h5py.File``; the pool
    itself pickles to an empty pool (handles are reopened lazily in the new process).
    """

    def __init__(self, max_open: int = 64):
        self.max_open = max_open
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[collections.OrderedDict] = []  # every thread's table, so close_all() reaches them

    def get(self, path) -> h5py.File:
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = collections.OrderedDict()
            with self._lock:
                self._all.append(files)
        key = str(path)
        handle = files.get(key)
        if handle is not None:
            files.move_to_end(key)
            return handle
        handle = open_h5(key)
        files[key] = handle
        while len(files) > self.max_open:
            _, oldest = files.popitem(last=False)
            oldest.close()
        return handle

    def close(self) -> None:
        """Closes this thread's handles (other threads close theirs when they exit)."""
        files = getattr(self._local, "files", None)
        while files:
            _, handle = files.popitem()
            handle.close()

    def close_all(self) -> None:
        """Closes the handles of every thread; only once no thread reads any more (loader closed), so that no
        h5py object is left to be freed during interpreter shutdown."""
        with self._lock:
            tables, self._all = self._all, []
        for files in tables:
            while files:
                _, handle = files.popitem()
                handle.close()
        self._local = threading.local()

    def __getstate__(self):
        return {"max_open": self.max_open}

    def __setstate__(self, state):
        self.__init__(state["max_open"])


def require_dataset(file: h5py.File, path, name: str, ndim: int | None = None, kind: str | None = None):
    """``file[name]`` after checking it is a dataset with ``ndim`` dims and a dtype kind in ``kind``."""
    if name not in file:
        raise DataError(path, f"missing dataset '{name}'")
    node = file[name]
    if not isinstance(node, h5py.Dataset):
        raise DataError(path, f"'{name}' is a group, expected a dataset")
    if ndim is not None and node.ndim != ndim:
        raise DataError(path, f"dataset '{name}' has shape {node.shape}, expected {ndim} dimension(s)")
    if kind is not None and node.dtype.kind not in kind:
        raise DataError(path, f"dataset '{name}' has dtype {node.dtype}, expected kind '{kind}'")
    return node
