"""The examples run, with small settings, and reach what they promise."""
import builtins
import importlib
import pathlib
import sys

import numpy as np
import pytest

import tracegrad as tg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))


def test_micrograd_exercises():
    results = importlib.import_module("micrograd_exercises").main()
    checks = [label for label, value in results.items() if isinstance(value, bool)]
    assert len(checks) == 6 and all(results[label] for label in checks)
    assert results["symmetric error"] < results["one-sided error"] / 100


def test_micrograd_mlp_fits_the_four_examples():
    results = importlib.import_module("micrograd_mlp").main(steps=50, verbose=False)
    np.testing.assert_allclose(results["predictions"], [1.0, -1.0, -1.0, 1.0], atol=0.1)


def test_moons_reaches_full_training_accuracy(tmp_path):
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    picture = str(tmp_path / "moons.png") if has_matplotlib else None
    results = importlib.import_module("moons").main(steps=100, picture=picture, verbose=False)
    assert results["accuracy"] == 1.0
    if has_matplotlib:
        assert (tmp_path / "moons.png").stat().st_size > 1000


def test_digits_learns():
    pytest.importorskip("sklearn")
    results = importlib.import_module("digits").main(epochs=3, verbose=False)
    assert results["test_accuracy"] > 0.9


def test_a_missing_extra_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def without_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_sklearn)
    with pytest.raises(SystemExit, match=r'needs scikit-learn: pip install -e "\.\[examples\]"') as caught:
        importlib.import_module("digits").load_digits_or_exit()
    assert caught.value.code != 0


def test_pendulum_fit_recovers_the_parameters(tmp_path):
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    picture = tmp_path / "pendulum.png"
    results = importlib.import_module("pendulum_fit").main(out=str(picture), verbose=False)
    np.testing.assert_allclose(results["fitted"], results["true"], rtol=0.02)
    assert results["loss"] < 0.003  # the noise's variance is 0.0025
    assert picture.exists() == has_matplotlib
    if has_matplotlib:
        assert picture.stat().st_size > 1000


def test_digits_epoch_in_jit_trains_as_the_per_step_loop():
    pytest.importorskip("sklearn")
    digits = importlib.import_module("digits")
    in_jit = digits.main(epochs=2, verbose=False, epoch_in_jit=True)
    per_step = digits.main(epochs=2, verbose=False)
    assert in_jit["test_accuracy"] == per_step["test_accuracy"] > 0.85
    for a, b in zip(tg.tree_leaves(in_jit["params"]), tg.tree_leaves(per_step["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_distributed_digits_trains_alike_on_one_worker_and_on_two():
    pytest.importorskip("sklearn")
    pytest.importorskip("distributed")
    results = importlib.import_module("distributed_digits").main(workers=2, steps=3, verbose=False)
    np.testing.assert_allclose(results["many"], results["one"], rtol=1e-12)
    assert results["one"][-1] < results["one"][0]


def test_digits_cnn_learns_in_float32():
    pytest.importorskip("sklearn")
    results = importlib.import_module("digits_cnn").main(epochs=2, verbose=False)
    assert results["test_accuracy"] > 0.9
    assert all(leaf.dtype == np.float32 for leaf in tg.tree_leaves(results["params"]))
