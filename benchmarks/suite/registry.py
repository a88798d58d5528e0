"""Which implementations can run here: the adapters whose libraries import."""
from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field

# (key, adapter module, how to install; None: required, a failure to import is an error)
ADAPTERS = [
    ("numba", "suite.impl_numba", None),
    ("numpy", "suite.impl_numpy", None),
    ("tracegrad", "suite.impl_tracegrad", None),
    ("micrograd", "suite.impl_micrograd", "pip install micrograd"),
    ("torch", "suite.impl_torch", "pip install torch==2.13.0"),
    ("jax", "suite.impl_jax", "pip install jax"),
    ("autograd", "suite.impl_autograd", "pip install autograd"),
]
KEYS = ["numba", "numba-tree"] + [key for key, _, _ in ADAPTERS[1:]]  # also the table's order


@dataclass
class Loaded:
    implementations: list = field(default_factory=list)  # Implementation, in table order
    versions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # peers that are skipped, and why
    errors: list[str] = field(default_factory=list)  # required adapters that failed to import


def wanted(key: str, selected: set[str] | None) -> bool:
    return not selected or key == "numba" or key in selected  # the reference always runs


def load(selected: set[str] | None = None) -> Loaded:
    """Import the adapters of the selected keys (all by default, the numba reference always)."""
    loaded = Loaded()
    for key, module_name, install in ADAPTERS:
        if not wanted(key, selected):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # noqa: BLE001  (a peer that fails to import is skipped, never fatal)
            if install is None:
                loaded.errors.append(f"{key} failed to import:\n{traceback.format_exc()}")
            else:
                loaded.notes.append(f"{key}: skipped, it does not import ({type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else ''}); {install}")
            continue
        loaded.versions.append(module.VERSION)
        loaded.implementations += [impl for impl in module.IMPLEMENTATIONS if wanted(impl.key, selected)]
    return loaded
