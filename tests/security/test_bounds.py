"""Issue 14, items 2 and 3: nothing outside the model's folder is read, and small hostile files cannot exhaust
memory.

Every case goes through the CLI (a subprocess where memory or a blocking read is measured, CliRunner
elsewhere) with a hostile file built here: external data pointing out of the model's folder (``..``, absolute,
symlink), a small ONNX file whose graph builds a huge tensor, npz files whose declared sizes are huge,
out-of-range numeric options, and hypothesis-mutated ONNX and npz bytes.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from sgsc_export._io import load_npz_bounded
from sgsc_export._limits import MAX_INPUT_BYTES_ENV, MAX_ONNX_ELEMENTS_ENV
from sgsc_export.cli import main
from sgsc_export.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
RSS_CAP_KB = 1_500_000  # 1.5 GB peak resident memory of the child
W_INT = np.array([[1, -2, 3], [-4, 5, -6], [7, -8, 1], [0, 2, -1]], np.int8)  # [in 4, out 3]


# ------------------------------------------------------------------ builders


def _dq_model(w_tensor: onnx.TensorProto, extra_nodes=(), extra_inits=(), opset: int = 18) -> onnx.ModelProto:
    """x[N,4] → MatMul(x, DequantizeLinear(w, scale, axis=1)) → y[N,3]; ``w`` may be computed by
    extra_nodes."""
    scale = numpy_helper.from_array(np.full(3, 0.5, np.float32), "scale")
    nodes = [*extra_nodes, helper.make_node("DequantizeLinear", ["w", "scale"], ["wf"], axis=1),
             helper.make_node("MatMul", ["x", "wf"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [t for t in [w_tensor, scale, *extra_inits] if t is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _external_model(folder: Path, location: str, data_file: Path | None = None) -> Path:
    """A model whose int8 weight ``w`` is external data at ``location`` (written to ``data_file`` if
    given)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(W_INT, "w")
    raw = w.raw_data
    if data_file is not None:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        data_file.write_bytes(raw)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "m.onnx"
    path.write_bytes(_dq_model(w).SerializeToString())
    return path


def _data_npz(path: Path, n: int = 24) -> Path:
    x = np.random.RandomState(0).randn(n, 4).astype(np.float32)
    logits = x @ (W_INT.astype(np.float32) * 0.5)
    np.savez(path, x=x, y=logits.argmax(1), preservation_indices=np.arange(6), logits=logits)
    return path


def _sgsc(*args: str | os.PathLike, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """Run ``sgsc ARGS`` in a fresh process (memory capped); return (exit code, stdout+stderr, peak RSS in
    kB)."""
    code = ("import resource, subprocess, sys\n"
            "def cap():\n"
            "    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "r = subprocess.run([sys.executable, '-m', 'sgsc_export.cli', *sys.argv[1:]], preexec_fn=cap,\n"
            "                   capture_output=True, text=True)\n"
            "sys.stdout.write(r.stdout + r.stderr)\n"
            "sys.stdout.write('\\nRSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(r.returncode)\n")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd or ROOT, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    out, _, rss = r.stdout.rpartition("\nRSS ")
    return r.returncode, out.strip() + r.stderr, int(rss.strip() or 0)


def _one_line(out: str, *needles: str) -> str:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in lines[0], out
    return lines[0]


# ------------------------------------------------------------------ external data


@pytest.fixture
def outside(tmp_path) -> Path:
    """A FIFO outside the model's folder: opening it for reading would block, so a read shows as a timeout."""
    secret = tmp_path / "secret"
    os.mkfifo(secret)
    return secret


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked-dir"])
@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_external_data_outside_the_folder_is_refused_unread(tmp_path, outside, how, command):
    folder = tmp_path / "model"
    if how == "dotdot":
        model = _external_model(folder, "../secret")
    elif how == "absolute":
        model = _external_model(folder, str(outside))
    elif how == "symlink":
        model = _external_model(folder, "w.bin")
        (folder / "w.bin").symlink_to(outside)
    else:
        model = _external_model(folder, "sub/secret")
        (folder / "sub").symlink_to(tmp_path)
    args = [command, model] + (["--data", f"npz:{_data_npz(tmp_path / 'd.npz')}", "--no-latency"]
                               if command == "validate" else [])
    code, out, _ = _sgsc(*args, cwd=tmp_path, timeout=90)  # a read of the FIFO would hang until the timeout
    assert code == 2, out
    _one_line(out, "outside the model's folder")


@pytest.mark.parametrize("location", ["m.data", "sub/m.data"])
def test_external_data_beside_the_model_works_in_inspect_and_validate(tmp_path, location):
    folder = tmp_path / "model"
    model = _external_model(folder, location, folder / location)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / location.split("/")[0]).write_bytes(b"decoy")  # what resolving against the cwd would read
    runner = CliRunner()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        result = runner.invoke(main, ["inspect", "--json", str(model)])
        assert result.exit_code == 0, result.output
        layers = json.loads(result.output)["layers"]
        assert [(r["shape"], r["container"]) for r in layers] == [([4, 3], "INT8")]
        assert layers[0]["bits_histogram"] == {"4": 3}  # the integers read from the file beside the model
        result = runner.invoke(main,
                               ["validate", str(model), "--data", f"npz:{_data_npz(tmp_path / 'd.npz')}",
                                      "--no-latency"])
        assert result.exit_code == 0, result.output
        assert "PASSED" in result.output
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("entries, needle", [
    ({"offset": "8", "length": "12"}, "the file holds 12"),          # past the end of the data file
    ({"offset": "0", "length": "4"}, "declares shape"),               # length ≠ what the shape needs
    ({"offset": "-1", "length": "12"}, "negative"),
    ({"offset": "x", "length": "12"}, "non-integer"),
])
def test_external_data_offsets_and_lengths_are_checked_before_reading(tmp_path, entries, needle):
    folder = tmp_path / "model"
    model = _external_model(folder, "m.data", folder / "m.data")
    proto = onnx.load(str(model), load_external_data=False)
    w = next(t for t in proto.graph.initializer if t.name == "w")
    for entry in w.external_data:
        if entry.key in entries:
            entry.value = entries[entry.key]
    model.write_bytes(proto.SerializeToString())
    data = ["--data", f"npz:{_data_npz(tmp_path / 'd.npz')}", "--no-latency"]
    for args in (["inspect", str(model)], ["validate", str(model), *data]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        _one_line(result.output, needle)


# ------------------------------------------------------------------ ONNX memory bombs


def _bomb(kind: str) -> onnx.ModelProto:
    """A small file whose DequantizeLinear weight is computed, from constants, into a huge tensor."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    if kind == "constant_of_shape":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"],
                                  value=numpy_helper.from_array(np.array([1], np.int8)))]
        return _dq_model(None, nodes, [i64("shape", [1 << 20, 1 << 20])])
    if kind == "range":
        nodes = [helper.make_node("Range", ["a", "b", "c"], ["r"]),
                 helper.make_node("Cast", ["r"], ["w"], to=TensorProto.INT8)]
        return _dq_model(None, nodes, [i64("a", 0), i64("b", 1 << 40), i64("c", 1)])
    if kind == "broadcast":  # ~240 KB of initializers, 3.6e9 elements once added
        a = numpy_helper.from_array(np.ones((30000, 1), np.int32), "a")
        b = numpy_helper.from_array(np.ones((1, 30000), np.int32), "b")
        nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
                 helper.make_node("Cast", ["s"], ["w"], to=TensorProto.INT8)]
        return _dq_model(None, nodes, [a, b])
    if kind == "sparse":  # a sparse initializer densified by onnxruntime and onnx.reference
        model = _dq_model(numpy_helper.from_array(W_INT, "w"))
        values = numpy_helper.from_array(np.ones(1, np.float32), "huge")
        indices = numpy_helper.from_array(np.zeros(1, np.int64), "huge_idx")
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1 << 40]))
        return model
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["constant_of_shape", "range", "broadcast", "sparse"])
@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_small_onnx_building_a_huge_tensor_fails_fast_in_little_memory(tmp_path, kind, command):
    path = tmp_path / "bomb.onnx"
    path.write_bytes(_bomb(kind).SerializeToString())
    assert path.stat().st_size < 300_000
    args = [command, path] + (["--data", f"npz:{_data_npz(tmp_path / 'd.npz')}", "--no-latency"]
                              if command == "validate" else [])
    code, out, rss = _sgsc(*args, timeout=120)
    assert code == 2, out
    line = _one_line(out)
    assert rss < RSS_CAP_KB, f"peak RSS {rss} kB"
    if kind != "constant_of_shape" or command == "validate":
        assert MAX_ONNX_ELEMENTS_ENV in line, line


def test_the_element_limit_is_raised_by_its_environment_variable(tmp_path):
    model = _dq_model(numpy_helper.from_array(W_INT, "w"))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    code, out, _ = _sgsc("inspect", path, env={MAX_ONNX_ELEMENTS_ENV: "8"})
    assert code == 2 and "8-element ONNX tensor limit" in _one_line(out, MAX_ONNX_ELEMENTS_ENV)
    code, out, _ = _sgsc("inspect", path, env={MAX_ONNX_ELEMENTS_ENV: "12"})
    assert code == 0, out
    code, out, _ = _sgsc("inspect", path, env={MAX_ONNX_ELEMENTS_ENV: "lots"})
    assert code == 2
    _one_line(out, MAX_ONNX_ELEMENTS_ENV)


# ------------------------------------------------------------------ npz bombs


def _npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _zip(members: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _declared_size_lie(data: bytes, size: int) -> bytes:
    """``data`` (a one-member zip) with that member's uncompressed size set to ``size`` in both headers."""
    raw = bytearray(data)
    local = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, size)
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, size)
    return bytes(raw)


def _npz_bombs() -> dict[str, bytes]:
    small = np.zeros(16, np.float32).tobytes()
    zeros = bytes(64 << 20)  # 64 MiB of zeros: ~64 KiB deflated
    return {
        "declared_shape": _zip({"x.npy": _npy_header((1 << 31, 4)) + small,
                                "y.npy": _npy_header((4,), "<i8")}),
        "declared_zip_size": _declared_size_lie(_zip({"x.npy": _npy_header((4,)) + small}), 0xF0000000),
        "real_deflate_bomb": _zip({"x.npy": _npy_header((len(zeros) // 4,)) + zeros}),
        "object_dtype": _zip({"x.npy": _npy_header((2,), "|O") + b"\x80\x04N."}),
    }


@pytest.fixture(scope="module")
def npz_bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("npz")
    out = {}
    for name, data in _npz_bombs().items():
        (folder / f"{name}.npz").write_bytes(data)
        out[name] = folder / f"{name}.npz"
    return out


@pytest.mark.parametrize("kind", ["declared_shape", "declared_zip_size", "real_deflate_bomb", "object_dtype"])
def test_npz_bombs_are_refused_before_decompressing(tmp_path, npz_bombs, kind):
    model = tmp_path / "m.onnx"
    model.write_bytes(_dq_model(numpy_helper.from_array(W_INT, "w")).SerializeToString())
    env = {MAX_INPUT_BYTES_ENV: str(16 << 20)}  # 16 MiB: the 64 MiB real bomb is over it
    code, out, rss = _sgsc("validate", model, "--data", f"npz:{npz_bombs[kind]}", "--no-latency", env=env)
    assert code == 2, out
    line = _one_line(out)
    assert rss < RSS_CAP_KB
    if kind == "object_dtype":
        assert "object dtype" in line
    else:
        assert MAX_INPUT_BYTES_ENV in line and "16 MiB input limit" in line, line


def test_npz_bomb_in_compress_is_refused(tmp_path):
    path = tmp_path / "train.npz"
    path.write_bytes(_zip({"x_train.npy": _npy_header((1 << 31, 4)) + bytes(64),
                           "y_train.npy": _npy_header((4,), "<i8") + bytes(32)}))
    result = CliRunner().invoke(main, ["compress", "--dataset", f"npz:{path}", "--model", "x.py:f",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    _one_line(result.output, "4 GiB input limit", MAX_INPUT_BYTES_ENV)
    assert not (tmp_path / "out").exists()


def _gz_idx(path: Path, dims: tuple[int, ...], chunks: int) -> None:
    import gzip
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        for _ in range(chunks):
            f.write(bytes(1 << 24))


@pytest.mark.parametrize("case", ["bomb", "declared_huge"])
def test_gzip_idx_bombs_cost_no_memory(tmp_path, case):
    """An IDX file in --data-dir is read no further than its header's size, which is checked first."""
    d = tmp_path / "mnist"
    d.mkdir()
    # bomb: 6 MB on disk, 6.7 GB decompressed behind a header of 78 MB; declared_huge: a 73 GiB header
    _gz_idx(d / "t10k-images-idx3-ubyte.gz", (100_000 if case == "bomb" else 100_000_000, 28, 28),
            400 if case == "bomb" else 0)
    _gz_idx(d / "t10k-labels-idx1-ubyte.gz", (100_000,), 0)
    code, out, rss = _sgsc("compress", "--dataset", "mnist", "--data-dir", d, "--out", tmp_path / "run",
                           timeout=120)
    assert code == 2, out
    _one_line(out, "more data than its header" if case == "bomb" else MAX_INPUT_BYTES_ENV)
    assert rss < RSS_CAP_KB, f"peak RSS {rss} kB"
    assert not (tmp_path / "run").exists()


def test_corrupt_gzip_idx_is_one_line_naming_the_file(tmp_path):
    import gzip
    d = tmp_path / "mnist"
    d.mkdir()
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    raw = bytearray(gzip.compress(header + bytes(range(256)) * 31))
    for i in range(20, 60):  # corrupt the deflate stream, not the gzip header
        raw[i] ^= 0xFF
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")
                                                                + bytes(10)))
    result = CliRunner().invoke(main, ["compress", "--dataset", "mnist", "--data-dir", str(d),
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    _one_line(result.output, "cannot read", "t10k-images-idx3-ubyte.gz")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "dir"])
def test_text_dataset_that_is_not_a_regular_file_is_refused(tmp_path, target):
    if target == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    elif target == "dir":
        target = tmp_path
    code, out, _ = _sgsc("compress", "--dataset", f"text:{target}", "--out", tmp_path / "run", timeout=60)
    assert code == 2, out
    _one_line(out, "is not a regular file")


def test_a_text_dataset_over_the_input_limit_is_refused(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("abc\n" * 1000)
    code, out, _ = _sgsc("compress", "--dataset", f"text:{path}", "--out", tmp_path / "run",
                         env={MAX_INPUT_BYTES_ENV: "1000"})
    assert code == 2, out
    _one_line(out, "1000 bytes input limit", MAX_INPUT_BYTES_ENV)


def test_load_npz_bounded_reads_honest_files_exactly():
    buf = io.BytesIO()
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "f": np.asfortranarray(np.eye(3)),
              "e": np.zeros((0, 5), np.int8), "s": np.int64(7)}
    np.savez_compressed(buf, **arrays)
    got = load_npz_bounded(buf.getvalue())
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        assert got[key].dtype == np.asarray(value).dtype and np.array_equal(got[key], value)
    assert set(load_npz_bounded(buf.getvalue(), allowed_keys=["a"])) == {"a"}
    with pytest.raises(DataError, match="input limit"):
        load_npz_bounded(buf.getvalue(), max_bytes=40)
    with pytest.raises(DataError, match="truncated|corrupt|cannot read"):
        load_npz_bounded(_zip({"x.npy": _npy_header((8,)) + bytes(16)}))  # header says 32 bytes, 16 present


# ------------------------------------------------------------------ numeric options


@pytest.mark.parametrize("args", [["--threads", "100000"], ["--threads", "0"], ["--batch-sizes", "1,100000"],
                                  ["--batch-sizes", "0"], ["--min-agreement", "1.5"],
                                  ["--max-accuracy-drop", "-1"], ["--max-accuracy-drop", "nan"],
                                  ["--max-layer-error", "-0.5"], ["--max-perplexity-ratio", "0.5"]])
def test_numeric_options_of_validate_are_bounded(tmp_path, args):
    model = tmp_path / "m.onnx"
    model.write_bytes(_dq_model(numpy_helper.from_array(W_INT, "w")).SerializeToString())
    result = CliRunner().invoke(main,
                                ["validate", str(model), "--data", f"npz:{_data_npz(tmp_path / 'd.npz')}",
                                       "--no-latency", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert args[0] in result.output or "error:" in result.output, result.output


# ------------------------------------------------------------------ mutated bytes


def _valid_onnx_bytes() -> bytes:
    return _dq_model(numpy_helper.from_array(W_INT, "w")).SerializeToString()


def _valid_npz_bytes() -> bytes:
    buf = io.BytesIO()
    x = np.random.RandomState(0).randn(12, 4).astype(np.float32)
    np.savez_compressed(buf, x=x, y=np.zeros(12, np.int64), preservation_indices=np.arange(3))
    return buf.getvalue()


def _mutations(base: bytes):
    flips = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(1, 255)), min_size=1, max_size=6)
    return st.one_of(st.integers(0, len(base) - 1).map(lambda n: base[:n]),
                     flips.map(lambda fl: bytes(_flip(bytearray(base), fl))))


def _flip(data: bytearray, flips) -> bytearray:
    for pos, mask in flips:
        data[pos] ^= mask
    return data


def _clean_exit(result) -> None:
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=_mutations(_valid_onnx_bytes()))
def test_mutated_onnx_never_tracebacks(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz-onnx")
    (folder / "m.onnx").write_bytes(data)
    npz = folder / "d.npz"
    npz.write_bytes(_valid_npz_bytes())
    runner = CliRunner()
    _clean_exit(runner.invoke(main, ["inspect", str(folder / "m.onnx")]))
    _clean_exit(runner.invoke(main,
                              ["validate", str(folder / "m.onnx"), "--data", f"npz:{npz}", "--no-latency",
                                     "--opt-levels", "disabled"]))


@_FUZZ
@given(data=_mutations(_valid_npz_bytes()))
def test_mutated_npz_never_tracebacks(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz-npz")
    (folder / "m.onnx").write_bytes(_valid_onnx_bytes())
    (folder / "d.npz").write_bytes(data)
    result = CliRunner().invoke(main,
                                ["validate", str(folder / "m.onnx"), "--data", f"npz:{folder / 'd.npz'}",
                                       "--no-latency", "--opt-levels", "disabled"])
    _clean_exit(result)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * RSS_CAP_KB


@pytest.mark.parametrize("case", ["dev_zero", "deep", "big", "not_utf8"])
def test_hostile_config_files_are_one_line(tmp_path, case):
    path = Path("/dev/zero") if case == "dev_zero" else tmp_path / "sgsc.toml"
    if case == "deep":
        path.write_text("a = " + "[" * 100_000)
    elif case == "big":
        path.write_text("#" * (2 << 20))
    elif case == "not_utf8":
        path.write_bytes(b"seed = 1\n\xff\xfe")
    code, out, _ = _sgsc("pipeline", "--config", path, "--out", tmp_path / "run", timeout=60)
    assert code == 2, out
    _one_line(out,
              {"dev_zero": "not a regular file", "deep": "not valid TOML", "big": "larger than a config file",
                    "not_utf8": "UTF-8"}[case])
    assert not (tmp_path / "run").exists()
