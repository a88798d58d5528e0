"""numba's cache of machine code, kept in tracegrad's private directory and signed.

numba's own cache (`cache=True`) writes pickles beside the source file or under
`NUMBA_CACHE_DIR`, possibly shared with other users, and unpickles whatever it finds there.
`SignedFunctionCache` keeps numba's logic (index keyed by signature and CPU, one data file per
signature) but places every file in a directory of `disk_cache` and signs it: a file without
a valid signature, unreadable or damaged, is a cache miss, and the compiled code overwrites it.
A data file is named by its key and holds it, so processes saving at once cannot mix them up
(an index entry lost to a concurrent save is a miss, never wrong code).
A failed write turns the cache off for the process (`disk_cache.cannot_write`), never the call.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache, IndexDataCacheFile, _CacheLocator

from . import disk_cache


class PrivateLocator(_CacheLocator):
    """numba's files of one function go in `directory`, whatever numba's settings say."""

    def __init__(self, py_func, directory: Path, source_stamp: str):
        self._py_file = py_func.__code__.co_filename  # numba names it in its warnings
        self._lineno = py_func.__code__.co_firstlineno
        self._directory = directory
        self._source_stamp = source_stamp

    def ensure_cache_path(self):
        pass  # disk_cache made the directory private to the user

    def get_cache_path(self):
        return str(self._directory)

    def get_source_stamp(self):
        return self._source_stamp

    def get_disambiguator(self):
        return str(self._lineno)


class PrivateCacheImpl(CompileResultCacheImpl):
    def __init__(self, py_func, directory: Path, source_stamp: str):  # numba's would search its own locators
        self._lineno = py_func.__code__.co_firstlineno
        self._locator = PrivateLocator(py_func, directory, source_stamp)
        module = os.path.splitext(os.path.basename(py_func.__code__.co_filename))[0]
        self._filename_base = self.get_filename_base(f"{module}.{py_func.__qualname__}", "")


class SignedCacheFile(IndexDataCacheFile):
    """numba's index and data files, each written with `disk_cache.write_signed` and read only if verified."""

    def __init__(self, directory: Path, filename_base: str, source_stamp: str):
        super().__init__(str(directory), filename_base, source_stamp)
        self._filename_base = filename_base
        self._root = directory.parent

    def save(self, key, data):
        if str(self._root) in disk_cache._turned_off:
            return
        try:
            data_name = self._data_name(key)
            self._write(self._data_path(data_name), (key, data))
            overloads = self._load_index()
            if overloads.get(key) != data_name:
                overloads[key] = data_name
                self._write(self._index_path, (self._version, self._source_stamp, overloads))
        except OSError as error:
            disk_cache.cannot_write(self._root, error)

    def load(self, key):
        data_name = self._load_index().get(key)
        stored = None if data_name is None else self._read(self._data_path(data_name))
        if not (isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key):
            return None
        return stored[1]

    def _data_name(self, key) -> str:
        """Named by its key, and holding it: two processes saving two signatures at once never
        share a data file, and an index entry can only lead to the code it was made for."""
        return f"{self._filename_base}.{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.nbc"

    def _load_index(self) -> dict:
        index = self._read(self._index_path)
        if not (isinstance(index, tuple) and len(index) == 3):
            return {}
        version, stamp, overloads = index
        return overloads if (version, stamp) == (self._version, self._source_stamp) else {}

    def _write(self, path: str, value) -> None:
        disk_cache.write_signed(self._root, Path(path), self._dump(value))

    def _read(self, path: str):
        payload = disk_cache.read_signed(self._root, Path(path))
        if payload is None:
            return None
        try:
            return pickle.loads(payload)  # signed by this user's key: written by tracegrad
        except Exception:  # written by another numba version, say
            return None


class SignedFunctionCache(FunctionCache):
    """numba's FunctionCache with its files in `directory`, signed."""

    def __init__(self, py_func, directory: Path, source_stamp: str):
        self._name = repr(py_func)
        self._py_func = py_func
        self._impl = PrivateCacheImpl(py_func, directory, source_stamp)
        self._cache_path = str(directory)
        self._cache_file = SignedCacheFile(directory, self._impl.filename_base, source_stamp)
        self.enable()

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:  # verified, yet not loadable here: compile again
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception:  # not serializable now (a compile interrupted by Ctrl-C): the code runs uncached
            pass


def cached(dispatcher: numba.core.registry.CPUDispatcher, directory: Path, source_stamp: str):
    """`dispatcher`, loading and saving its machine code in `directory`."""
    dispatcher._cache = SignedFunctionCache(dispatcher.py_func, directory, source_stamp)
    return dispatcher
