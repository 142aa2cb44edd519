"""Hostile inputs to `sgsc compress` / `sgsc pipeline` / `sgsc_export.compress` (issue 14, items 8, 9 and 11).

Every bad input is refused up front (before any float training) with exit code 2 and exactly one line
``error: …``, never a traceback, and leaves no artifact behind. Identical runs, and a resumed finished run,
write byte-identical artifacts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgsc_export.cli import main

torch.set_num_threads(1)

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    def flat():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


    def three():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


    class _Wrap(nn.Module):
        def __init__(self, how):
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.how = how

        def forward(self, x):
            z = self.fc(x.flatten(1))
            return {"tuple": (z, z), "one": (z,), "dict": {"logits": z}, "list": [z], "int": z.argmax(1),
                    "rank3": z[..., None], "batch": z[:1], "nan": z * float("nan")}[self.how]


    def tuple2():
        return _Wrap("tuple")


    def tuple1():
        return _Wrap("one")


    def as_dict():
        return _Wrap("dict")


    def as_list():
        return _Wrap("list")


    def ints():
        return _Wrap("int")


    def rank3():
        return _Wrap("rank3")


    def one_row():
        return _Wrap("batch")


    def nan_logits():
        return _Wrap("nan")


    def no_layer():
        return nn.Sequential(nn.Flatten())


    def batchnorm():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                             nn.Linear(16, 10))


    class _Matmul(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(64, 10))

        def forward(self, x):
            return x.flatten(1) @ self.w


    def params_only():
        return _Matmul()
''')


def _good(n_train: int = 40, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((n_train, 1, 8, 8), dtype=np.float32),
            "y_train": rng.integers(0, 10, n_train),
            "x_test": rng.random((n_test, 1, 8, 8), dtype=np.float32), "y_test": rng.integers(0, 10, n_test)}


@pytest.fixture
def env(tmp_path):
    """(runner, tmp, models.py, write_npz) for one test."""
    models = tmp_path / "models.py"
    models.write_text(MODELS)

    def npz(**changes) -> Path:
        arrays = {**_good(), **changes}
        path = tmp_path / "data.npz"
        np.savez(path, **arrays)
        return path

    return CliRunner(), tmp_path, models, npz


def _refused(r, out: Path | None, *needles: str) -> str:
    """Exit 2, one line `error: …` naming ``needles``, no traceback, and no artifact in ``out``."""
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    if out is not None:
        assert not (out / "manifest.json").exists()
    return lines[0]


def _compress(runner, *args):
    return runner.invoke(main,
                         ["compress", "--quiet", "--steps", "2", "--float-epochs", "1", "--max-drop", "100",
                          *map(str, args)])  # toy runs: no accuracy target to meet


# -- item 8: bad labels, unknown --exclude -------------------------------------------------------------------

@pytest.mark.parametrize("labels, needle", [
    (np.array([0.0, 1.7] * 5), "y_test must hold integer class indices, got float64"),
    # whole-valued floats too: no guessing
    (np.array([0.0, 1.0] * 5), "y_test must hold integer class indices"),
    (np.array([True, False] * 5), "y_test must hold integer class indices, got bool"),
    (np.array([0, 10**12] * 5), "MAX_CLASSES = 1048576"),
    (np.array([0, -3] * 5), "labels must be class indices >= 0"),
    (np.zeros((10, 1), np.int64), "one class index per sample"),
])
def test_bad_test_labels(env, labels, needle):
    runner, tmp, models, npz = env
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz(y_test=labels)}", "--model", f"{models}:flat", "--out", out)
    _refused(r, out, needle)
    assert not out.exists()


def test_label_beyond_the_models_outputs(env):
    runner, tmp, models, npz = env
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz()}", "--model", f"{models}:three", "--out", out)
    _refused(r, out, "labels go up to 9 but the model has 3 outputs")
    assert not out.exists()


def test_absurd_label_refused_before_a_default_model_is_built(tmp_path):
    """10^12 classes would allocate terabytes in the default model's last layer: refused in the data check."""
    from sgsc_export import DataError
    from sgsc_export.datasets.images import Split

    g = _good()
    with pytest.raises(DataError, match="MAX_CLASSES"):
        Split("x", g["x_train"], np.full(40, 10**12), g["x_test"], g["y_test"])


def test_unknown_exclude_names_the_layers(env):
    runner, tmp, _, _ = env
    out = tmp / "out"
    r = _compress(runner, "--exclude", "nosuchlayer", "--out", out)
    line = _refused(r, out, "--exclude 'nosuchlayer' is not a layer of the model", "0, 2, 6, 10")
    assert "nosuchlayer" in line
    r = _compress(runner, *[a for n in ("0", "2", "6", "10") for a in ("--exclude", n)], "--out", out)
    _refused(r, out, "no Conv1d/Conv2d/Linear layer to compress")
    assert not out.exists()


# -- item 9: one line instead of a traceback -----------------------------------------------------------------

@pytest.mark.parametrize("part, value", [("x_train", np.nan), ("x_test", np.inf), ("x_train", -np.inf),
                                         ("x_test", 1e300)])
def test_nan_and_inf_in_x(env, part, value):
    runner, tmp, models, npz = env
    x = _good()[part].astype(np.float64)
    x[3, 0, 2, 2] = value
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz(**{part: x})}", "--model", f"{models}:flat", "--out", out)
    _refused(r, out, f"{part} holds NaN or infinite values", "sample 3")


@pytest.mark.parametrize("changes, needle", [
    ({"x_train": np.zeros(40, np.float32), "x_test": np.zeros(10, np.float32)}, "at least 2 dimensions"),
    ({"x_train": np.zeros((40, 5), np.float32), "x_test": np.zeros((10, 5), np.float32)},
     "the model cannot run on the data: a batch of x_train of shape (8, 5)"),
    ({"x_train": np.zeros((40, 8, 8, 1), np.float32)}, "differ in shape"),
    ({"x_train": np.full((40, 1, 8, 8), "a")}, "x_train has dtype <U1; it must hold real numbers"),
    ({"x_test": np.zeros((10, 1, 8, 8), np.complex64)}, "x_test has dtype complex64"),
    ({"y_train": np.zeros(39, np.int64)}, "x_train has 40 samples but y_train has 39"),
])
def test_wrong_rank_shape_or_dtype_of_x(env, changes, needle):
    runner, tmp, models, npz = env
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz(**changes)}", "--model", f"{models}:flat", "--out", out)
    _refused(r, out, needle)


@pytest.mark.parametrize("factory, needle", [
    ("tuple2", "forward returns a tuple, not a tensor"), ("tuple1", "forward returns a tuple, not a tensor"),
    ("as_dict", "forward returns a dict, not a tensor"), ("as_list", "forward returns a list, not a tensor"),
    ("ints", "returns a torch.int64 tensor; it must return float logits"),
    ("rank3", "returns shape (8, 10, 1)"),
    ("one_row", "returns shape (1, 10) for a batch of x_train of shape (8, 1, 8, 8)"),
    ("nan_logits", "NaN or infinite logits"),
    ("no_layer", "no Conv1d/Conv2d/Linear layer to compress"),
    ("params_only", "no Conv1d/Conv2d/Linear layer"),
])
def test_models_that_cannot_be_compressed(env, factory, needle):
    runner, tmp, models, npz = env
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz()}", "--model", f"{models}:{factory}", "--out", out)
    _refused(r, out, needle)
    assert not out.exists()


def test_a_batch_of_one_for_batchnorm_is_one_line(env):
    """129 samples in batches of 128: the last batch of float training holds one sample, which BatchNorm1d
    cannot train on. Found only in training, but still one line, and no artifact."""
    runner, tmp, models, npz = env
    g = _good(129)
    out = tmp / "out"
    r = _compress(runner, "--dataset", f"npz:{npz(x_train=g['x_train'], y_train=g['y_train'])}",
                  "--model", f"{models}:batchnorm", "--validation-size", "0", "--out", out)  # all 129 train
    _refused(r, out, "float training on a batch of shape (1, 1, 8, 8)",
             "BatchNorm layer cannot train on a batch")


def test_bad_weights_files(env):
    runner, tmp, models, npz = env
    out = tmp / "out"
    good = tmp / "good.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict(), good)
    blob = good.read_bytes()
    cases = {
        "empty.pt": (b"", "is empty (0 bytes)"),
        "truncated.pt": (blob[: len(blob) // 2], "cannot load weights"),
        "text.pt": (b"not a checkpoint at all\n", "cannot load weights"),
    }
    for name, (data, _) in cases.items():
        (tmp / name).write_bytes(data)
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    torch.save([torch.zeros(3)], tmp / "list.pt")
    torch.save({"1.weight": torch.zeros(64, 10), "1.bias": torch.zeros(10)}, tmp / "shape.pt")
    torch.save({"1.weight": torch.full((10, 64), float("nan")), "1.bias": torch.zeros(10)}, tmp / "nan.pt")
    torch.save({"0.weight": torch.zeros(10, 64)}, tmp / "keys.pt")
    cases.update({"tensor.pt": (None, "holds a Tensor, not a state dict"), "list.pt": (None, "holds a list"),
                  "shape.pt": (None, "1.weight has shape (64, 10), the model's is (10, 64)"),
                  "nan.pt": (None, "1.weight holds NaN or infinite values"),
                  "keys.pt": (None, "does not match the model: missing ['1.bias', '1.weight']")})
    for name, (_, needle) in cases.items():
        r = _compress(runner, "--dataset", f"npz:{npz()}", "--model", f"{models}:flat",
                      "--weights", tmp / name, "--out", out)
        _refused(r, out, needle)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-5"], "seed=-5 is out of range; allowed [0, 4294967295]"),
    (["--seed", str(2**32)], "seed=4294967296 is out of range"),
    (["--steps", "0"], "steps=0 is out of range; allowed [1, 10000000]"),
    (["--steps", str(10**8)], "steps=100000000 is out of range"),
    (["--float-epochs", "-1"], "float_epochs=-1 is out of range"),
    (["--init-bits", "9"], "init_bits=9.0 is out of range; allowed (0.0, 8.0]"),
    (["--init-bits", "0"], "init_bits=0.0 is out of range"),
    (["--gamma", "nan"], "gamma=nan is out of range"), (["--lam", "inf"], "lam=inf is out of range"),
    (["--distill", "-1"], "distill=-1.0 is out of range"),
    (["--preservation-size", "0"], "preservation_size=0 is out of range"),
    (["--preservation-size", "5000"],
     "preservation_size=5000 is larger than the training split (1437 samples)"),
])
def test_out_of_range_options(env, args, needle):
    runner, tmp, _, _ = env
    out = tmp / "out"
    r = runner.invoke(main, ["compress", "--quiet", *args, "--out", str(out)])
    _refused(r, out, needle)
    assert not out.exists()


def test_out_that_cannot_be_created_is_refused_before_any_work(env, monkeypatch):
    import sgsc_export.datasets.images as data

    def no_data(*a, **k):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(data, "load_dataset", no_data)
    runner, tmp, _, _ = env
    afile = tmp / "a-file"
    afile.write_text("x")
    _refused(_compress(runner, "--out", afile / "sub" / "run"), None, "cannot be created",
             "is not a directory")
    _refused(_compress(runner, "--out", afile), None, "exists and is not a directory")
    assert afile.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into any directory")
def test_out_in_an_unwritable_directory(env):
    runner, tmp, _, _ = env
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _refused(_compress(runner, "--out", locked / "run"), None, "is not writable")
    finally:
        locked.chmod(0o700)


def test_pipeline_refuses_the_same_inputs(env):
    runner, tmp, models, npz = env
    out = tmp / "run"
    base = ["pipeline", "--quiet", "--no-report", "--steps", "2", "--float-epochs", "1", "--out", str(out)]
    env_clear = {k: None for k in os.environ if k.startswith("SGSC_")}
    r = runner.invoke(main, [*base, "--seed", "-5"], env=env_clear)
    _refused(r, out, "seed=-5 is out of range")
    r = runner.invoke(main, [*base, "--steps", "0"], env=env_clear)
    _refused(r, out, "steps=0 is out of range")
    r = runner.invoke(main, [*base, "--threads", "100000"], env=env_clear)
    _refused(r, out, "threads=100000 is out of range; allowed [1, 1024]")
    x = _good()["x_train"].copy()
    x[0, 0, 0, 0] = np.nan
    r = runner.invoke(main, [*base, "--dataset", f"npz:{npz(x_train=x)}", "--model", f"{models}:flat"],
                      env=env_clear)
    _refused(r, out, "x_train holds NaN")
    r = runner.invoke(main, [*base, "--dataset", f"npz:{npz()}", "--model", f"{models}:tuple1"],
                      env=env_clear)
    _refused(r, out, "not a tensor")
    r = runner.invoke(main, [*base, "--exclude", "nosuchlayer"], env=env_clear)
    _refused(r, out, "--exclude 'nosuchlayer' is not a layer")


def test_the_python_api_refuses_too(tmp_path):
    from sgsc_export import CompressConfig, ConfigError, DataError, ModelError, compress
    from sgsc_export.datasets.images import Split
    from sgsc_export.datasets.text import TextSplit
    from sgsc_export.models import build_model

    (tmp_path / "m.py").write_text(MODELS)
    g = _good()
    data = Split("toy", **g)
    model, _ = build_model(f"{tmp_path / 'm.py'}:tuple1")
    with pytest.raises(ModelError, match="not a tensor"):
        compress(model, data, CompressConfig(steps=2, float_epochs=1), out_dir=tmp_path / "o")
    model, _ = build_model(f"{tmp_path / 'm.py'}:flat")
    with pytest.raises(ConfigError, match="nosuchlayer"):
        compress(model, data, CompressConfig(steps=2, exclude=("nosuchlayer",)))
    with pytest.raises(ConfigError, match="seed"):
        CompressConfig(seed=-5)
    with pytest.raises(ConfigError, match="must be an integer"):
        CompressConfig(steps="10")
    with pytest.raises(DataError, match="y_train must hold integer"):
        Split("toy", **{**g, "y_train": g["y_train"].astype(np.float32)})
    tokens = np.zeros((4, 32), np.int64)
    with pytest.raises(DataError, match="outside"):
        TextSplit("t", tokens + 7, tokens, tokens, tokens, vocab="\nab")
    assert not (tmp_path / "o").exists()


# hypothesis: npz files with one defect each, in random dtypes and shapes ------------------------------------

_DEFECTS = ("nan_x", "inf_x", "float_y", "huge_y", "negative_y", "y_rank", "x_rank", "length", "empty",
            "x_dtype")


@st.composite
def hostile_npz(draw):
    n_train, n_test = draw(st.integers(1, 12)), draw(st.integers(1, 6))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    xdtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64]))
    ydtype = draw(st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = {"x_train": rng.integers(0, 3, (n_train, *shape)).astype(xdtype),
         "y_train": rng.integers(0, 3, n_train),
         "x_test": rng.integers(0, 3, (n_test, *shape)).astype(xdtype), "y_test": rng.integers(0, 3, n_test)}
    a["y_train"], a["y_test"] = a["y_train"].astype(ydtype), a["y_test"].astype(ydtype)
    defect = draw(st.sampled_from(_DEFECTS))
    part = draw(st.sampled_from(["train", "test"]))
    x, y = f"x_{part}", f"y_{part}"
    if defect in ("nan_x", "inf_x"):
        xs = a[x].astype(draw(st.sampled_from([np.float16, np.float32, np.float64])))
        xs.reshape(-1)[draw(st.integers(0, xs.size - 1))] = np.nan if defect == "nan_x" else -np.inf
        a[x] = xs
    elif defect == "float_y":
        a[y] = (a[y].astype(draw(st.sampled_from([np.float16, np.float32, np.float64])))
                + draw(st.sampled_from([0, 0.5])))
    elif defect == "huge_y":
        a[y] = a[y].astype(np.int64)
        a[y][0] = draw(st.sampled_from([2**20, 10**12, 2**62]))
    elif defect == "negative_y":
        a[y] = a[y].astype(np.int64)
        a[y][-1] = -draw(st.integers(1, 2**40))
    elif defect == "y_rank":
        a[y] = a[y][:, None]
    elif defect == "x_rank":
        a[x] = a[x].reshape(-1)[: len(a[x])]
    elif defect == "length":
        a[y] = a[y][:-1] if len(a[y]) > 1 else np.concatenate([a[y], a[y]])
    elif defect == "empty":
        a[x], a[y] = a[x][:0], a[y][:0]
    else:
        a[x] = a[x].astype(draw(st.sampled_from([np.bool_, np.complex64, "U2"])))
    return a


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=hostile_npz())
def test_hypothesis_hostile_npz_is_one_line(arrays):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "m.py").write_text(MODELS)
        np.savez(d / "h.npz", **arrays)
        out = d / "out"
        r = _compress(CliRunner(), "--dataset", f"npz:{d / 'h.npz'}", "--model", f"{d / 'm.py'}:flat",
                      "--out", out)
        _refused(r, out)
        assert not out.exists()


# -- item 11: determinism ------------------------------------------------------------------------------------

TOY = ["--steps", "60", "--finetune-steps", "0", "--float-epochs", "1", "--gamma", "1", "--quiet",
       "--max-drop", "100"]  # a toy run is not meant to meet the default accuracy target (exit 1)
ARTIFACT = ("manifest.json", "history.json", "model.safetensors", "quant.safetensors", "preservation.npz",
            "eval.npz")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det") / "a"
    r = CliRunner().invoke(main, ["compress", *TOY, "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _bytes(d: Path) -> dict[str, bytes]:
    return {name: (d / name).read_bytes() for name in ARTIFACT}


def test_identical_runs_write_identical_files_and_no_wall_clock(toy_run, tmp_path):
    import json

    assert "seconds" not in json.loads((toy_run / "history.json").read_text())
    b = tmp_path / "b"
    r = CliRunner().invoke(main, ["compress", *TOY, "--out", str(b)])
    assert r.exit_code == 0, r.output
    assert _bytes(b) == _bytes(toy_run)


def test_resuming_a_finished_run_rewrites_nothing(toy_run, tmp_path):
    import json

    c = tmp_path / "c"
    shutil.copytree(toy_run, c)
    before = _bytes(c)
    assert sum(layer["channels_removed"] for layer in json.loads(before["manifest.json"])["layers"]) > 0
    r = CliRunner().invoke(main, ["compress", *TOY, "--out", str(c), "--resume"])
    assert r.exit_code == 0, r.output
    assert _bytes(c) == before


def _tamper(toy_run: Path, tmp_path: Path, edit) -> Path:
    c = tmp_path / "c"
    shutil.copytree(toy_run, c)
    ckpt = c / "checkpoints" / "last.pt"
    if getattr(edit, "payload", False):  # an edit of the loaded checkpoint; else of its bytes
        payload = torch.load(ckpt, weights_only=True)
        edit(payload)
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(edit(ckpt.read_bytes()))
    (c / "manifest.json").unlink()
    return c


def _set(path: str, value):
    def edit(payload):
        *head, last = path.split("/")
        d = payload
        for k in head:
            d = d[k]
        d[last] = value(d[last]) if callable(value) else value
    edit.payload = True
    return edit


@pytest.mark.parametrize("edit, needle", [
    (lambda b: b"", "cannot be read"),
    (lambda b: b[: len(b) // 3], "cannot be read"),
    (lambda b: b"garbage" * 10, "cannot be read"),
    (_set("train_state", lambda s: {**s, "extra": 1}), "train_state has other fields"),
    (_set("train_state/step", 10**9), "step 1000000000 is outside [0, 60]"),
    (_set("train_state/step", "x"), "wrong type"),
    (_set("preservation/indices", lambda t: t + 10**6), "preservation indices outside"),
    (_set("preservation/criteria", lambda t: t - 5), "unknown preservation criteria"),
    (_set("generator", torch.zeros(3)), "generator is not a generator state"),
    (_set("model_state/0.weight", torch.zeros(64, 1, 3, 3)), "has 0.weight of shape (64, 1, 3, 3)"),
    (_set("model_state", lambda s: {k: v for k, v in s.items() if k != "0.b"}),
     "other tensors than the model"),
    (_set("optimizer/param_groups", []), "does not fit this model"),
])
def test_corrupt_checkpoint_on_resume(toy_run, tmp_path, edit, needle):
    c = _tamper(toy_run, tmp_path, edit)
    r = CliRunner().invoke(main, ["compress", *TOY, "--out", str(c), "--resume"])
    _refused(r, c, needle, "--resume")


def test_a_checkpoint_that_is_not_a_dict(toy_run, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(toy_run, c)
    torch.save([1, 2, 3], c / "checkpoints" / "last.pt")
    (c / "manifest.json").unlink()
    r = CliRunner().invoke(main, ["compress", *TOY, "--out", str(c), "--resume"])
    _refused(r, c, "holds a list, not a dict")
