"""What every library adapter provides: how to build a step, and the value and gradient to check."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Callable


class Unsupported(Exception):
    """This implementation does not run this workload; the message says why (printed as 'skipped')."""


def package_version(distribution: str) -> str:
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


def unchanged(result):
    return result


@dataclass
class Step:
    """One step ready to time as fn(*args); read(result) gives (value, tree) as floats and NumPy arrays.

    The tree is the gradient when the workload's step is value_and_grad, else the parameters
    after the update. A stateful step (PyTorch, micrograd) updates its own parameters, so its
    later calls go on training; a pure one is called again on the same arguments.
    """
    fn: Callable
    args: tuple = ()
    read: Callable = unchanged


@dataclass
class Implementation:
    key: str  # the name for --implementations
    label: str  # the row's name in the table
    build_step: Callable  # (workload) -> Step, or raises Unsupported
    value_and_grad: Callable  # (workload) -> (value, gradient) as floats and NumPy arrays, from fresh state
    kinds: tuple = ("exercise", "softmax_nll", "mlp")  # workload kinds it has a row for
