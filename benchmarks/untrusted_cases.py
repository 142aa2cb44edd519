"""The hostile-input cases of ``python -m benchmarks.untrusted`` (issue 14), declared as data.

Each :class:`Case` has a builder that writes its hostile files into a fresh case directory (the command's
working directory) and returns the argv after ``sgsc``, or a list of :class:`Proc` for cases of several
processes (two runs at once, Ctrl-C, a killed run and its rerun). Ids are ``cNN_…`` for the categories
numbered in issue 14 and ``xNN_…`` for cases the issue did not list, filed under the nearest category. Three
shared tampering helpers do the work: :func:`edit_manifest` (manifest.json, optionally re-hashing the files so
only the edit is tested), :func:`edit_onnx` (a copy of an ONNX file with a function applied) and :func:`npz` /
:func:`raw_npz` (npz files, the latter member by member: duplicate names, lying headers, pickles).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import PROFILE_NAMES

ART_FILES = ("model.safetensors", "quant.safetensors", "preservation.npz", "eval.npz")
PROFILES = PROFILE_NAMES
TOY = ["--steps", "60", "--finetune-steps", "10", "--float-epochs", "2", "--quiet"]
PIPE = TOY + ["--profiles", "portable", "--no-latency", "--no-report", "--max-accuracy-drop", "100"]
TAMPER_AGREEMENT = 0.95  # a tampered file keeps this top-1 agreement; its cases gate at --min-agreement 0.9
# the toy artifact loses accuracy; only parity is gated
LOOSE = ["--no-latency", "--max-accuracy-drop", "100"]
AGREE = ["--min-agreement", "0.9"]
DIGITS = "sgsc_export.models:digits_cnn"
BENIGN_MODEL = ("def make(num_classes=10, width=32):\n    from sgsc_export.models import digits_cnn\n"
                "    return digits_cnn(num_classes, width)\n")


@dataclass
class Proc:
    """One process of a case: started ``start`` s after the case (or after the previous ones ended),
    optionally sent ``signal`` ``signal_after`` s after its start. The last Proc of a case is the one
    judged."""

    argv: list[str]
    start: float = 0.0
    after_previous: bool = False
    signal: int | None = None
    signal_after: float = 0.0


@dataclass
class Base:
    """The shared inputs built once per harness run: a toy digits artifact, its three exports, the bomb
    npz."""

    root: Path
    tamper: dict[str, dict[str, Any]] = field(default_factory=dict)  # profile → {layer, channel, max_diff, …}
    bomb: Path | None = None

    @property
    def art(self) -> Path:
        return self.root / "art"

    def onnx(self, profile: str) -> Path:
        return self.root / f"{profile}.onnx"


@dataclass
class Ctx:
    """A case's directory (the command's cwd), the shared base, and the marker file payloads try to create."""

    dir: Path
    base: Base | None
    cap: int = 4 << 30  # the memory cap (bytes) the runner sets; bombs are sized past it

    @property
    def marker(self) -> Path:
        return self.dir / "MARKER"

    def art(self, name: str = "art") -> str:
        shutil.copytree(self.base.art, self.dir / name, symlinks=True)
        return name

    def onnx(self, profile: str = "portable", name: str | None = None) -> str:
        name = name or f"{profile}.onnx"
        shutil.copyfile(self.base.onnx(profile), self.dir / name)
        return name

    def write(self, rel: str, data: bytes | str) -> str:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return rel

    def payload(self) -> str:
        """Python source that creates the marker file."""
        return f"open({str(self.marker)!r}, 'w').write('payload ran')\n"


@dataclass(frozen=True)
class Case:
    id: str
    category: int
    desc: str
    build: Callable[[Ctx], list[str] | list[Proc]]
    expect: tuple[int, ...] = (2,)
    outputs: tuple[str, ...] = ()  # paths (or folders) the command may create or change
    marker: bool = False           # a payload case: the marker file must not appear
    needs_base: bool = True
    timeout: float = 120.0
    check: Callable[[Ctx, dict], str | None] | None = None  # extra promise: None kept, else the reason


# ---------------------------------------------------------------------------------------------- helpers
def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def edit_manifest(ctx: Ctx, art: str, fn: Callable[[dict], Any] | None = None, rehash: bool = False,
                  text: str | None = None) -> None:
    """Apply ``fn`` to ``art/manifest.json`` (or replace it by ``text``); ``rehash``: record the files' new
    SHA-256s, so the artifact's own integrity check passes and only the edit is tested."""
    p = ctx.dir / art / "manifest.json"
    if text is not None:
        p.write_text(text)
        return
    m = json.loads(p.read_text())
    if fn is not None:
        fn(m)
    if rehash:
        m["files"] = {n: sha(ctx.dir / art / n) for n in ART_FILES if (ctx.dir / art / n).is_file()}
    p.write_text(json.dumps(m, indent=2))


def edit_onnx(ctx: Ctx, fn: Callable[[Any], Any], profile: str = "portable", name: str = "m.onnx") -> str:
    """A copy of the base's ``profile`` export with ``fn(model)`` applied (in place)."""
    import onnx

    model = onnx.load(str(ctx.base.onnx(profile)))
    fn(model)
    onnx.save_model(model, str(ctx.dir / name))
    return name


def npz(ctx: Ctx, rel: str, **arrays: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # object arrays are pickled, which is the point of some cases
    return ctx.write(rel, buf.getvalue())


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def raw_npz(ctx: Ctx, rel: str, members: list[tuple[str, bytes]]) -> str:
    """An npz written member by member (duplicate names allowed)."""
    import warnings

    p = ctx.dir / rel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(p, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    return rel


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def eval_arrays(ctx: Ctx) -> dict[str, np.ndarray]:
    with np.load(ctx.base.art / "eval.npz") as z:
        return {k: z[k] for k in z.files}


def data_npz(ctx: Ctx, rel: str = "d.npz", x: np.ndarray | None = None, y: np.ndarray | None = None,
             reshape: tuple[int, ...] | None = None, dtype: Any = None) -> str:
    """A validate --data file: the artifact's test split then its preservation set (``preservation_indices``,
    so the exports' sgsc.preservation_sha256 matches), with the test part's ``x`` / ``y`` overridden, or the
    whole ``x`` reshaped / cast (neither changes the float32 bytes the preservation SHA-256 is taken over)."""
    ev = eval_arrays(ctx)
    n = len(ev["x_test"])
    xs = np.concatenate([ev["x_test"] if x is None else x, ev["x_preservation"]])
    ys = np.concatenate([ev["y_test"] if y is None else y, ev["y_preservation"]])
    if reshape is not None:
        xs = xs.reshape(len(xs), *reshape)
    if dtype is not None:
        xs = xs.astype(dtype) * (1 + 1j) if np.dtype(dtype).kind == "c" else xs.astype(dtype)
    return npz(ctx, rel, x=xs, y=ys, logits=np.concatenate([ev["logits_test"], ev["logits_preservation"]]),
               preservation_indices=np.arange(n, len(xs)))


def train_npz(ctx: Ctx, rel: str = "d.npz", **override: np.ndarray) -> str:
    """A compress --dataset npz: file (x_train, y_train, x_test, y_test: the artifact's test split),
    overridden."""
    ev = eval_arrays(ctx)
    arrays = {"x_train": ev["x_test"], "y_train": ev["y_test"], "x_test": ev["x_test"],
              "y_test": ev["y_test"],
              **override}
    return npz(ctx, rel, **arrays)


class _Payload:
    """Unpickling this calls os.system: the classic __reduce__ payload."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def pickle_payload(ctx: Ctx) -> bytes:
    return pickle.dumps(_Payload(f"touch '{ctx.marker}'"))


def torch_payload(ctx: Ctx) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": _Payload(f"touch '{ctx.marker}'")}, buf)
    return buf.getvalue()


def externalize(model: Any, data_path: Path, location: str, offset: int = 0) -> None:
    """Move every initializer of ≥ 64 bytes to external data at ``location`` (bytes written to
    ``data_path``)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    with open(data_path, "wb") as f:
        f.write(b"\0" * offset)
        for t in model.graph.initializer:
            if t.HasField("raw_data") and len(t.raw_data) >= 64:
                set_external_data(t, location=location, offset=f.tell(), length=len(t.raw_data))
                f.write(t.raw_data)
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL


def ext_onnx(ctx: Ctx, model_rel: str, data_rel: str, location: str, offset: int = 0) -> str:
    """The portable export with its weights in an external file at ``data_rel`` (case-relative), named
    ``location``."""
    import onnx

    model = onnx.load(str(ctx.base.onnx("portable")))
    (ctx.dir / model_rel).parent.mkdir(parents=True, exist_ok=True)
    (ctx.dir / data_rel).parent.mkdir(parents=True, exist_ok=True)
    externalize(model, ctx.dir / data_rel, location, offset)
    onnx.save_model(model, str(ctx.dir / model_rel))
    return model_rel


def tiny_graph(nodes, inits, out_shape=None, name="g"):
    """A model with input ``input`` [N,1,8,8] float and output ``out``."""
    from onnx import TensorProto as T
    from onnx import helper as h

    g = h.make_graph(nodes, name, [h.make_tensor_value_info("input", T.FLOAT, ["N", 1, 8, 8])],
                     [h.make_tensor_value_info("out", T.FLOAT, out_shape)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


def save_model(ctx: Ctx, rel: str, model) -> str:
    import onnx

    onnx.save_model(model, str(ctx.dir / rel))
    return rel


def negate_scale(model: Any, layer: str, channel: int) -> None:
    """Negate one output channel's scale: the weights of that channel change sign (a tampered file)."""
    from onnx import numpy_helper as nh

    for t in model.graph.initializer:
        if t.name == f"{layer}.scale":
            a = nh.to_array(t).copy()
            a[channel] = -a[channel]
            t.CopyFrom(nh.from_array(a, t.name))
            return
    raise KeyError(layer)


def find_tamper(base: Base, profile: str) -> dict[str, Any]:
    """The one-channel negation that changes the logits most while keeping top-1 agreement ≥ TAMPER_AGREEMENT
    (its cases run with --min-agreement 0.9): a corruption the agreement check cannot see (issue 14, category
    10). Empty if there is none."""
    import onnx
    import onnxruntime as ort

    ev = np.load(base.art / "eval.npz")
    x, ref = ev["x_test"], ev["logits_test"]
    model = onnx.load(str(base.onnx(profile)))
    scales = [t for t in model.graph.initializer if t.name.endswith(".scale") and "bias" not in t.name]
    best: dict[str, Any] = {}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for t in scales:
        layer = t.name[: -len(".scale")]
        for c in range(int(np.prod(t.dims))):
            m = onnx.ModelProto()
            m.CopyFrom(model)
            negate_scale(m, layer, c)
            s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            y = s.run(None, {s.get_inputs()[0].name: x})[0]
            agree = float((y.argmax(1) == ref.argmax(1)).mean())
            diff = float(np.abs(y - ref).max())
            if agree >= TAMPER_AGREEMENT and diff > best.get("max_diff", 0.05):
                best = {"layer": layer, "channel": c, "max_diff": diff, "agreement": agree}
    return best


def write_bomb(path: Path, nbytes: int) -> None:
    """An npz whose member x_train (written first) inflates to ``nbytes`` of zeros; ~1/1000 of that on
    disk."""
    n = max(1, nbytes // 256)
    chunk = bytes(64 << 20)
    ev_small = {"x": np.zeros((4, 1, 8, 8), np.float32), "y": np.zeros(4, np.int64),
                "y_train": np.zeros(4, np.int64), "x_test": np.zeros((4, 1, 8, 8), np.float32),
                "y_test": np.zeros(4, np.int64)}
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x_train.npy", "w", force_zip64=True) as f:
            f.write(npy_header("<f4", (n, 1, 8, 8)))
            left = n * 256
            while left > 0:
                f.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        for k, v in ev_small.items():
            z.writestr(k + ".npy", npy_bytes(v))
    tmp.replace(path)


def link_bomb(ctx: Ctx, rel: str = "bomb.npz") -> str:
    try:
        os.link(ctx.base.bomb, ctx.dir / rel)
    except OSError:
        shutil.copyfile(ctx.base.bomb, ctx.dir / rel)
    return rel


# ------------------------------------------------------------------------------------------ checks
def stdout_has(word: str) -> Callable[[Ctx, dict], str | None]:
    def check(ctx: Ctx, row: dict) -> str | None:
        return None if word in row.get("stdout_tail", "") else f"the output does not name {word!r}"
    return check


def no_passed_report(*rels: str) -> Callable[[Ctx, dict], str | None]:
    """After an erroring run, no report it superseded still says passed."""
    def check(ctx: Ctx, row: dict) -> str | None:
        for rel in rels:
            for p in sorted(ctx.dir.glob(rel)):
                if p.is_file() and '"passed"' in p.read_text(errors="replace"):
                    return f"{p.relative_to(ctx.dir)} still says passed"
        return None
    return check


def same_as_base(rel_dir: str, names: tuple[str, ...]) -> Callable[[Ctx, dict], str | None]:
    def check(ctx: Ctx, row: dict) -> str | None:
        differ = [n for n in names if not (ctx.dir / rel_dir / n).is_file()
                  or sha(ctx.dir / rel_dir / n) != sha(ctx.base.art / n)]
        return f"differs from an identical run: {', '.join(differ)}" if differ else None
    return check


def same_onnx(rel: str, profile: str = "portable") -> Callable[[Ctx, dict], str | None]:
    def check(ctx: Ctx, row: dict) -> str | None:
        p = ctx.dir / rel
        if not p.is_file():
            return f"{rel} was not written"
        return (None if sha(p) == sha(ctx.base.onnx(profile))
                else f"{rel} is not byte-identical to the base export")
    return check


def others_exit(code: int) -> Callable[[Ctx, dict], str | None]:
    def check(ctx: Ctx, row: dict) -> str | None:
        bad = [c for c in row.get("other_exit_codes", []) if c != code]
        return f"the other run exited {bad[0]} (expected {code})" if bad else None
    return check


SIGINT, SIGKILL = signal.SIGINT, signal.SIGKILL


# ------------------------------------------------------------------------------------------- builders
def _factory(factory: str, kwargs: dict | None = None, digest: str | None = None):
    def fn(m: dict) -> None:
        m["model"].update(factory=factory, kwargs=kwargs or {}, source_sha256=digest)
    return fn


def art_with_factory(ctx: Ctx, factory: str, kwargs: dict | None = None, digest: str | None = None) -> str:
    art = ctx.art()
    edit_manifest(ctx, art, _factory(factory, kwargs, digest))
    return art


def art_with_pyfile(ctx: Ctx, body: str, digest: str | None | bool = True, name: str = "evil.py") -> str:
    """An artifact whose manifest names ``name:make`` (absolute path); ``digest`` True: the file's real
    SHA-256."""
    ctx.write(name, body)
    real = sha(ctx.dir / name)
    return art_with_factory(ctx, f"{ctx.dir / name}:make", {"num_classes": 10},
                            real if digest is True else digest)


def evil_model(ctx: Ctx) -> str:
    return ctx.payload() + BENIGN_MODEL


def export_of(art: str, *extra: str) -> list[str]:
    return ["export", art, "-o", "out.onnx", *extra]


def fake_artifact(ctx: Ctx, manifest: dict) -> str:
    """A hand-made artifact (no compression): empty tensors, tiny npz files, the given manifest, correct
    hashes."""
    from safetensors.numpy import save

    (ctx.dir / "fake").mkdir()
    ctx.write("fake/model.safetensors", save({"w": np.zeros(1, np.float32)}))
    ctx.write("fake/quant.safetensors", save({"w": np.zeros(1, np.float32)}))
    for n in ("preservation.npz", "eval.npz"):
        npz(ctx, f"fake/{n}", x=np.zeros((1, 1, 8, 8), np.float32))
    m = {"format": "sgsc-artifact", "format_version": 1, "layers": [], **manifest}
    ctx.write("fake/manifest.json", json.dumps(m))
    edit_manifest(ctx, "fake", rehash=True)
    return "fake"


def pipeline(out: str, *extra: str) -> list[str]:
    return ["pipeline", "--out", out, *PIPE, *extra]


def huge_constant(ctx: Ctx, cap: int) -> str:
    """~300 bytes of ONNX whose weight is ConstantOfShape([K,1,3,3]) int8: K·9 bytes > the memory cap."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    k = (cap + (1 << 30)) // 9
    inits = [nh.from_array(np.array([k, 1, 3, 3], np.int64), "shape"), nh.from_array(np.float32(0.5), "s")]
    nodes = [h.make_node("ConstantOfShape", ["shape"], ["wi"], value=h.make_tensor("v", T.INT8, [1], [1])),
             h.make_node("DequantizeLinear", ["wi", "s"], ["w"]),
             h.make_node("Conv", ["input", "w"], ["out"])]
    return save_model(ctx, "bomb.onnx", tiny_graph(nodes, inits, ["N", k, 6, 6]))


def nested_if(ctx: Ctx, depth: int = 20) -> str:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    def graph(d: int):
        if d == 0:
            node = h.make_node("Constant", [], ["o"], value=nh.from_array(np.ones(1, np.float32)))
        else:
            # linear size
            node = h.make_node("If", ["c"], ["o"], then_branch=graph(d - 1), else_branch=graph(0))
        return h.make_graph([node], f"g{d}", [], [h.make_tensor_value_info("o", T.FLOAT, [1])])

    nodes = [h.make_node("If", ["c"], ["out"], then_branch=graph(depth), else_branch=graph(0))]
    return save_model(ctx, "nested.onnx", tiny_graph(nodes, [nh.from_array(np.array(True), "c")], [1]))


def cyclic(ctx: Ctx) -> str:
    from onnx import helper as h

    nodes = [h.make_node("Add", ["input", "b"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
             h.make_node("Identity", ["a"], ["out"])]
    return save_model(ctx, "cyclic.onnx", tiny_graph(nodes, [], ["N", 1, 8, 8]))


def other_model(ctx: Ctx) -> str:
    from onnx import helper as h

    nodes = [h.make_node("Flatten", ["input"], ["out"])]
    return save_model(ctx, "other.onnx", tiny_graph(nodes, [], ["N", 64]))


def tampered(ctx: Ctx, profile: str) -> str:
    t = ctx.base.tamper[profile]
    if not t:
        raise RuntimeError(f"no channel of {profile} changes the logits while keeping "
                           f"agreement {TAMPER_AGREEMENT}")
    return edit_onnx(ctx, lambda m: negate_scale(m, t["layer"], t["channel"]), profile,
                     f"{profile}-tampered.onnx")


def set_meta(key: str, value: str):
    def fn(m) -> None:
        for p in m.metadata_props:
            if p.key == key:
                p.value = value
    return fn


def _bits9(m: dict) -> None:
    m["layers"][0]["bits"][0] = 9


def _minimal(m: dict) -> None:
    for k in [k for k in m if k not in ("format", "format_version", "files")]:
        del m[k]


def _layers_empty(m: dict) -> None:
    m["layers"] = []


def _huge_shape(m: dict) -> None:
    m["model"]["input_shape"] = [1, 1, 100000, 100000]


def _tamper_logits(ctx: Ctx, art: str) -> None:
    ev = eval_arrays(ctx)
    ev["logits_test"] = ev["logits_test"] + np.float32(0.25)
    npz(ctx, f"{art}/eval.npz", **ev)


def _object_eval(ctx: Ctx, art: str) -> None:
    ev = eval_arrays(ctx)
    ev["x_test"] = np.array([_Payload(f"touch '{ctx.marker}'")], dtype=object)
    npz(ctx, f"{art}/eval.npz", **ev)
    edit_manifest(ctx, art, rehash=True)


def _symlink_member(ctx: Ctx) -> str:
    art = ctx.art()
    (ctx.dir / "elsewhere").mkdir()
    shutil.move(ctx.dir / art / "model.safetensors", ctx.dir / "elsewhere" / "model.safetensors")
    os.symlink("../elsewhere/model.safetensors", ctx.dir / art / "model.safetensors")
    return art


def _flip_byte(path: Path, at: int = -100) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def _stale_report(ctx: Ctx) -> list[str]:
    ctx.write("ok.json", json.dumps({"status": "passed", "note": "written by an earlier run"}))
    ctx.write("blocker", "a file, so blocker/r.md cannot be created")
    return ["validate", ctx.onnx(), "--run", ctx.art(), *LOOSE, "--report", "ok.json", "--markdown",
            "blocker/r.md"]


def _pipeline_rerun_error(ctx: Ctx) -> list[str]:
    run = ctx.art("run")
    ctx.write("run/validation/portable.json", json.dumps({"status": "passed"}))
    return pipeline(run, "--dataset", "npz:missing.npz", "--model", DIGITS)


def _resume_payload(ctx: Ctx, cmd: str) -> list[str]:
    art = ctx.art()
    ctx.write(f"{art}/checkpoints/last.pt", torch_payload(ctx))
    if cmd == "pipeline":
        return pipeline(art, "--resume")
    return ["compress", "--out", art, "--resume", *TOY]


def _ext_cwd(ctx: Ctx) -> list[str]:
    ext_onnx(ctx, "m/model.onnx", "w.bin", "w.bin")  # the data sits in the cwd, not beside the model
    return ["inspect", "m/model.onnx"]


def _ext_symlink(ctx: Ctx) -> list[str]:
    ext_onnx(ctx, "m/model.onnx", "outside.bin", "w.bin")
    os.symlink("../outside.bin", ctx.dir / "m" / "w.bin")
    return ["inspect", "m/model.onnx"]


def _ext_fifo(ctx: Ctx) -> list[str]:
    ext_onnx(ctx, "m/model.onnx", "m/w.bin", "w.bin")
    os.unlink(ctx.dir / "m" / "w.bin")
    os.mkfifo(ctx.dir / "m" / "w.bin")
    return ["validate", "m/model.onnx", "--run", ctx.art(), *LOOSE]


def _ext_dev_zero(ctx: Ctx) -> list[str]:
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(ctx.base.onnx("portable")))
    for t in model.graph.initializer:
        if t.name.endswith(".weight_int"):
            set_external_data(t, location="/dev/zero", offset=0, length=1 << 40)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(ctx.dir / "m.onnx"))
    return ["inspect", "m.onnx"]


def _ext_past_end(ctx: Ctx) -> list[str]:
    import onnx

    ext_onnx(ctx, "m/model.onnx", "m/w.bin", "w.bin")
    model = onnx.load(str(ctx.dir / "m/model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "offset":
                e.value = str(int(e.value) + (1 << 30))
    onnx.save_model(model, str(ctx.dir / "m/model.onnx"))
    return ["validate", "m/model.onnx", "--run", ctx.art(), *LOOSE]


def _declared_huge_init(ctx: Ctx) -> list[str]:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    # make_tensor would refuse
    t = T(name="wi", data_type=T.INT8, dims=[1 << 20, 1 << 20], raw_data=b"\1" * 16)
    nodes = [h.make_node("DequantizeLinear", ["wi", "s"], ["w"]),
             h.make_node("MatMul", ["input", "w"], ["out"])]
    save_model(ctx, "m.onnx", tiny_graph(nodes, [t, nh.from_array(np.float32(1), "s")], ["N", 1, 8, 1 << 20]))
    return ["inspect", "m.onnx"]


def _header_lies(ctx: Ctx) -> list[str]:
    members = [("x.npy", npy_header("<f4", (1 << 28, 1, 8, 8)) + b"\0" * 100),
               ("y.npy", npy_bytes(np.zeros(4, np.int64)))]
    return ["validate", ctx.onnx(), "--data", "npz:" + raw_npz(ctx, "lies.npz", members), *LOOSE]


def _idx_gz(ctx: Ctx, dims: tuple[int, ...], chunks: int) -> None:
    """mnist/t10k-images as a gzip IDX file declaring ``dims``, followed by ``chunks`` × 16 MiB of zeros."""
    import gzip
    path = ctx.dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        for _ in range(chunks):
            f.write(bytes(1 << 24))
    with gzip.open(ctx.dir / "mnist" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (100_000).to_bytes(4, "big"))


def _idx_bomb(ctx: Ctx) -> list[str]:
    _idx_gz(ctx, (100_000, 28, 28), 400)  # 6 MB on disk, 6.7 GB inflated, behind a 78 MB header
    return ["compress", "--dataset", "mnist", "--data-dir", "mnist", "--out", "run", "--quiet"]


def _idx_declared_huge(ctx: Ctx) -> list[str]:
    _idx_gz(ctx, (100_000_000, 28, 28), 0)  # a 73 GiB header
    return ["compress", "--dataset", "mnist", "--data-dir", "mnist", "--out", "run", "--quiet"]


def _text_fifo(ctx: Ctx) -> list[str]:
    os.mkfifo(ctx.dir / "names.fifo")
    return ["compress", "--dataset", "text:names.fifo", "--out", "run", "--quiet"]


def _config_fifo(ctx: Ctx) -> list[str]:
    os.mkfifo(ctx.dir / "sgsc.toml")
    return ["pipeline", "--config", "sgsc.toml", "--out", "run"]


def _duplicate_members(ctx: Ctx) -> list[str]:
    with np.load(ctx.dir / data_npz(ctx)) as z:
        good = {k: z[k] for k in z.files}
    other = good["x"].copy()
    other[: len(eval_arrays(ctx)["x_test"])] = 1.0  # the test part differs, the preservation set does not
    members = [(f"{k}.npy", npy_bytes(v)) for k, v in good.items()] + [("x.npy", npy_bytes(other))]
    os.unlink(ctx.dir / "d.npz")
    return ["validate", ctx.onnx(), "--data", "npz:" + raw_npz(ctx, "dup.npz", members), *LOOSE]


def _cm(ctx: Ctx, body: str, *extra: str) -> list[str]:
    """compress with a user's model file (named on the command line) on digits."""
    ctx.write("user_model.py", body)
    return ["compress", "--model", "user_model.py:make", "--out", "out", *TOY, *extra]


def _cnpz(ctx: Ctx, rel: str, *extra: str) -> list[str]:
    return ["compress", "--dataset", f"npz:{rel}", "--model", DIGITS, "--out", "out", *TOY, *extra]


def _v(ctx: Ctx, *extra: str, profile: str = "portable") -> list[str]:
    return ["validate", ctx.onnx(profile), "--run", ctx.art(), *LOOSE, *extra]


def _vd(ctx: Ctx, data: str, *extra: str, onnx_rel: str | None = None) -> list[str]:
    return ["validate", onnx_rel or ctx.onnx(), "--data", f"npz:{data}", *LOOSE, *extra]


def _odd_path(ctx: Ctx) -> list[str]:
    name = "ärt 日本 ;touch MARKER; $(touch MARKER) `touch MARKER`"
    return ["export", ctx.art(name), "-o", "ö 😀 $(touch MARKER).onnx"]


def _kill_rerun(ctx: Ctx) -> list[Proc]:
    return [Proc(pipeline("run"), signal=SIGKILL, signal_after=12),
            Proc(pipeline("run"), after_previous=True)]


TUPLE_MODEL = BENIGN_MODEL.replace("    return digits_cnn(num_classes, width)\n", """    import torch
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = digits_cnn(num_classes, width)
        def forward(self, x):
            y = self.net(x)
            return RESULT
    return M()
""")
EXIT0_MODEL = "import sys\n\ndef make(num_classes=10):\n    sys.exit(0)\n"
NO_LAYER_MODEL = ("import torch\n\ndef make(num_classes=10):\n"
                  "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU())\n")


C = Case
CASES: list[Case] = [
    # 1 code execution ---------------------------------------------------------------------------------------
    C("c01_factory_os_system", 1, "manifest names os:system with a shell command as kwargs",
      lambda c: export_of(art_with_factory(c, "os:system", {"command": f"touch '{c.marker}'"})), marker=True),
    C("c01_factory_subprocess", 1, "manifest names subprocess:check_call",
      lambda c: export_of(art_with_factory(c, "subprocess:check_call", {"args": ["touch", str(c.marker)]})),
      marker=True),
    C("c01_factory_builtins_exec", 1, "manifest names builtins:exec",
      lambda c: export_of(art_with_factory(c, "builtins:exec", {"source": c.payload()})), marker=True),
    C("c01_factory_py_null_sha", 1, "manifest names a .py factory with source_sha256 null",
      lambda c: export_of(art_with_pyfile(c, evil_model(c), None)), marker=True),
    C("c01_factory_py_wrong_sha", 1, "manifest names a .py factory whose SHA-256 differs",
      lambda c: export_of(art_with_pyfile(c, evil_model(c), "0" * 64)), marker=True),
    C("c01_factory_py_right_sha", 1, "manifest names a .py factory with its real SHA-256, no flag given",
      lambda c: export_of(art_with_pyfile(c, evil_model(c))), marker=True),
    C("c01_factory_module_in_cwd", 1, "manifest names evil_mod:make, evil_mod.py in the working directory",
      lambda c: (c.write("evil_mod.py", evil_model(c)), export_of(art_with_factory(c, "evil_mod:make")))[1],
      marker=True),
    C("c01_validate_run_os_system", 1, "validate --run --layers on an artifact naming os:system",
      lambda c: ["validate", c.onnx(), "--run",
                 art_with_factory(c, "os:system", {"command": f"touch '{c.marker}'"}),
                 *LOOSE, "--layers"], expect=(0, 2), marker=True),
    C("c01_resume_checkpoint_pickle", 1, "compress --resume from a last.pt holding a __reduce__ payload",
      lambda c: _resume_payload(c, "compress"), marker=True),
    C("c01_pipeline_resume_pickle", 1, "pipeline --resume from a last.pt holding a __reduce__ payload",
      lambda c: _resume_payload(c, "pipeline"), marker=True),
    C("c01_weights_pickle_reduce", 1, "--weights is a plain pickle with a __reduce__ payload",
      lambda c: _cm(c, BENIGN_MODEL, "--weights", c.write("w.pkl", pickle_payload(c))), marker=True),
    C("c01_weights_torch_reduce", 1, "--weights is a torch.save zip whose data.pkl runs os.system",
      lambda c: _cm(c, BENIGN_MODEL, "--weights", c.write("w.pt", torch_payload(c))), marker=True),
    C("c01_fake_artifact_os_system", 1, "hand-made artifact (no compression) naming os:system",
      lambda c: export_of(fake_artifact(c, {"model": {"factory": "os:system", "input_shape": [1, 1, 8, 8],
                                                      "kwargs": {"command": f"touch '{c.marker}'"}}})),
      marker=True, needs_base=False),
    C("c01_builtin_factory_control", 1, "control: honest artifact, built-in factory, no flags",
      lambda c: export_of(c.art()), expect=(0,), outputs=("out.onnx",)),
    C("c01_model_flag_control", 1, "control: .py factory named with --model, SHA-256 matches",
      lambda c: export_of(art_with_pyfile(c, BENIGN_MODEL, name="mine.py"), "--model", "mine.py:make"),
      expect=(0,), outputs=("out.onnx",)),
    C("c01_trust_flag_control", 1, "control: .py factory with --trust-model-code, SHA-256 matches",
      lambda c: export_of(art_with_pyfile(c, BENIGN_MODEL, name="mine.py"), "--trust-model-code"),
      expect=(0,), outputs=("out.onnx",)),
    C("x01_npz_object_pickle", 1, "validate --data npz whose x is an object array with a payload",
      lambda c: _vd(c, npz(c, "evil.npz", x=np.array([_Payload(f"touch '{c.marker}'")], dtype=object),
                            y=np.zeros(1, np.int64))), marker=True),
    C("x01_eval_npz_object_pickle", 1, "artifact eval.npz holds a pickled payload (hashes updated)",
      lambda c: (_object_eval(c, c.art()), ["validate", c.onnx(), "--run", "art", *LOOSE])[1], marker=True),
    C("x01_shell_metachar_paths", 1, "control: paths with unicode and shell metacharacters",
      _odd_path, expect=(0,), outputs=("ö 😀 $(touch MARKER).onnx",), marker=True),
    # 2 reading outside --------------------------------------------------------------------------------------
    C("c02_extdata_dotdot", 2, "inspect: external data location ../outside.bin",
      lambda c: ["inspect", ext_onnx(c, "m/model.onnx", "outside.bin", "../outside.bin")]),
    C("c02_extdata_absolute", 2, "inspect: external data at an absolute path",
      lambda c: ["inspect", ext_onnx(c, "m/model.onnx", "abs.bin", str(c.dir / "abs.bin"))]),
    C("c02_extdata_symlink_out", 2, "inspect: external data is a symlink to a file outside the folder",
      _ext_symlink),
    C("c02_extdata_from_cwd", 2, "inspect: external data only in the working directory, not beside the model",
      _ext_cwd),
    C("c02_extdata_dotdot_validate", 2, "validate: external data location ../outside.bin",
      lambda c: ["validate", ext_onnx(c, "m/model.onnx", "outside.bin", "../outside.bin"), "--run", c.art(),
                 *LOOSE]),
    C("c02_extdata_beside_inspect", 2, "control: inspect, external data beside the model",
      lambda c: ["inspect", ext_onnx(c, "m/model.onnx", "m/model.data", "model.data")], expect=(0,)),
    C("c02_extdata_beside_validate", 2, "control: validate, external data beside the model",
      lambda c: ["validate", ext_onnx(c, "m/model.onnx", "m/model.data", "model.data"), "--run", c.art(),
                 *LOOSE],
      expect=(0,)),
    C("x02_extdata_dev_zero", 2, "inspect: external data /dev/zero, length 1 TiB", _ext_dev_zero),
    C("x02_extdata_fifo", 2, "validate: external data file beside the model is a FIFO", _ext_fifo,
      timeout=40),
    C("x02_extdata_offset_past_end", 2, "validate: external data offset past the end of the file",
      _ext_past_end),
    C("x02_artifact_symlink_member", 2, "artifact's model.safetensors is a symlink outside the artifact",
      lambda c: export_of(_symlink_member(c))),
    # 3 memory -----------------------------------------------------------------------------------------------
    C("c03_onnx_huge_constant_inspect", 3,
      "inspect: 300-byte ONNX whose weight is a ConstantOfShape over the cap",
      lambda c: ["inspect", huge_constant(c, c.cap)]),
    C("c03_onnx_huge_constant_validate", 3, "validate: the same ConstantOfShape bomb",
      lambda c: _vd(c, data_npz(c), onnx_rel=huge_constant(c, c.cap))),
    C("c03_npz_bomb_validate", 3, "validate --data: a deflate bomb npz (inflates past the cap)",
      lambda c: _vd(c, link_bomb(c)), timeout=180),
    C("c03_npz_bomb_compress", 3, "compress --dataset npz: the deflate bomb",
      lambda c: _cnpz(c, link_bomb(c)), timeout=180),
    C("c03_validate_threads_100000", 3, "validate --threads 100000", lambda c: _v(c, "--threads", "100000")),
    C("x03_validate_batch_size_huge", 3, "validate --batch-sizes 1,100000000 (latency batch of 25 GB)",
      lambda c: ["validate", c.onnx(), "--run", c.art(), "--max-accuracy-drop", "100", "--batch-sizes",
                 "1,100000000"]),
    C("x03_npz_header_lies", 3, "npz member declares shape (2^28,1,8,8), holds 100 bytes", _header_lies),
    C("x03_manifest_input_shape_huge", 3, "manifest input_shape [1,1,100000,100000] (hashes intact)",
      lambda c: export_of((lambda a: (edit_manifest(c, a, _huge_shape), a)[1])(c.art()))),
    C("x03_safetensors_header_huge", 3, "model.safetensors declares a 2^62-byte header (hashes updated)",
      lambda c: export_of((lambda a: (c.write(f"{a}/model.safetensors",
                                              (1 << 62).to_bytes(8, "little") + b"{}"),
                                      edit_manifest(c, a, rehash=True), a)[2])(c.art()))),
    C("x03_onnx_declared_huge_initializer", 3, "inspect: initializer dims 2^20 x 2^20 with 16 bytes of data",
      _declared_huge_init),
    C("x03_idx_gzip_bomb", 3, "compress --dataset mnist: a 6 MB gzip IDX file inflating to 6.7 GB",
      _idx_bomb, needs_base=False, timeout=180),
    C("x03_idx_declared_huge", 3, "compress --dataset mnist: an IDX header declaring 73 GiB",
      _idx_declared_huge, needs_base=False),
    C("x03_text_dev_zero", 3, "compress --dataset text:/dev/zero (never ends if read)",
      lambda c: ["compress", "--dataset", "text:/dev/zero", "--out", "run", "--quiet"], needs_base=False),
    C("x03_text_fifo", 3, "compress --dataset text:FIFO (blocks forever if opened)", _text_fifo,
      needs_base=False, timeout=60),
    C("x03_config_fifo", 3, "pipeline --config FIFO (blocks forever if opened)", _config_fifo,
      needs_base=False, timeout=60),
    C("x03_config_deep_nesting", 3, "pipeline --config: TOML nested 100,000 arrays deep",
      lambda c: ["pipeline", "--config", c.write("sgsc.toml", "a = " + "[" * 100_000), "--out", "run"],
      needs_base=False),
    # 4 data loss --------------------------------------------------------------------------------------------
    C("c04_export_o_manifest", 4, "export RUN -o RUN/manifest.json", lambda c: ["export", c.art(), "-o",
                                                                                "art/manifest.json"]),
    C("c04_export_o_weights", 4, "export RUN -o RUN/model.safetensors",
      lambda c: ["export", c.art(), "-o", "art/model.safetensors"]),
    C("c04_export_o_alias", 4, "export RUN -o ./RUN/../RUN/eval.npz (an alias of an input)",
      lambda c: ["export", c.art(), "-o", "./art/../art/eval.npz"]),
    C("c04_validate_report_is_model", 4, "validate m.onnx --report m.onnx",
      lambda c: _v(c, "--report", "portable.onnx")),
    C("c04_validate_markdown_is_eval", 4, "validate --markdown RUN/eval.npz",
      lambda c: _v(c, "--markdown", "art/eval.npz")),
    C("c04_validate_junit_is_data", 4, "validate --data npz:d.npz --junit d.npz",
      lambda c: _vd(c, data_npz(c), "--junit", "d.npz")),
    C("c04_pipeline_out_is_data", 4, "pipeline --dataset npz:d.npz --out d.npz",
      lambda c: ["pipeline", "--dataset", "npz:" + train_npz(c), "--model", DIGITS, "--out", "d.npz", *PIPE]),
    C("x04_compress_out_is_file", 4, "compress --out notes.txt (an existing file)",
      lambda c: ["compress", "--out", c.write("notes.txt", "my notes\n"), *TOY]),
    C("x04_export_o_is_directory", 4, "export -o an existing directory",
      lambda c: (c.write("outdir/keep.txt", "x"), ["export", c.art(), "-o", "outdir"])[1]),
    # 5 concurrency ------------------------------------------------------------------------------------------
    C("c05_pipeline_two_runs", 5, "a second pipeline into the same --out while the first runs",
      lambda c: [Proc(pipeline("run")), Proc(pipeline("run"), start=6)], outputs=("run",),
      check=others_exit(0), timeout=240),
    C("c05_pipeline_rerun_after_kill", 5, "control: pipeline killed (SIGKILL) mid-run, then rerun",
      _kill_rerun, expect=(0,), outputs=("run",), timeout=240),
    C("x05_export_same_output_twice", 5, "control: two exports to one -o at once",
      lambda c: [Proc(export_of(c.art())), Proc(export_of("art"), start=0.5)], expect=(0,),
      outputs=("out.onnx",),
      check=lambda c, r: others_exit(0)(c, r) or same_onnx("out.onnx")(c, r)),
    # 6 exit codes -------------------------------------------------------------------------------------------
    C("c06_pipeline_model_sys_exit0", 6, "pipeline --model whose factory calls sys.exit(0)",
      lambda c: (c.write("exit0.py", EXIT0_MODEL), pipeline("run", "--model", "exit0.py:make"))[1]),
    C("c06_compress_model_sys_exit0", 6, "compress --model whose factory calls sys.exit(0)",
      lambda c: _cm(c, EXIT0_MODEL)),
    C("c06_ctrl_c_compress", 6, "Ctrl-C (SIGINT) during compress",
      lambda c: [Proc(["compress", "--out", "out", *TOY[:-1], "--steps", "100000", "--quiet"], signal=SIGINT,
                      signal_after=15)], expect=(130,), outputs=("out",)),
    C("c06_ctrl_c_pipeline", 6, "Ctrl-C (SIGINT) during pipeline",
      lambda c: [Proc(pipeline("run", "--steps", "100000"), signal=SIGINT, signal_after=15)], expect=(130,),
      outputs=("run",)),
    C("c06_stale_passed_report", 6,
      "validate --report ok.json --markdown blocker/r.md: ok.json from before says passed",
      _stale_report, outputs=("ok.json",), check=no_passed_report("ok.json")),
    C("c06_pipeline_error_keeps_passed", 6, "pipeline rerun that errors, old validation/*.json says passed",
      _pipeline_rerun_error, outputs=("run",), check=no_passed_report("run/validation/*.json")),
    # 7 checks skipped silently ------------------------------------------------------------------------------
    C("c07_layers_reference_mismatch", 7, "validate --layers --layer-reference of another model",
      lambda c: _v(c, "--layers", "--layer-reference", other_model(c))),
    C("c07_run_missing_quant", 7, "validate --run with quant.safetensors deleted",
      lambda c: (c.art(), os.unlink(c.dir / "art/quant.safetensors"),
                 ["validate", c.onnx(), "--run", "art", *LOOSE])[2]),
    C("c07_run_modified_weights", 7, "validate --run with model.safetensors modified (SHA-256 differs)",
      lambda c: (c.art(), _flip_byte(c.dir / "art/model.safetensors"),
                 ["validate", c.onnx(), "--run", "art", *LOOSE])[2]),
    C("c07_run_modified_logits", 7,
      "validate --run with eval.npz reference logits modified (SHA-256 differs)",
      lambda c: (c.art(), _tamper_logits(c, "art"), ["validate", c.onnx(), "--run", "art", *LOOSE])[2]),
    C("x07_run_no_file_hashes", 7, "validate --run with the manifest's files table removed",
      lambda c: (c.art(), edit_manifest(c, "art", lambda m: m.pop("files")),
                 ["validate", c.onnx(), "--run", "art", *LOOSE])[2]),
    # 8 bad input accepted -----------------------------------------------------------------------------------
    C("c08_npz_float_y_test", 8, "compress npz: y_test holds floats (1.7)",
      lambda c: _cnpz(c, train_npz(c, y_test=eval_arrays(c)["y_test"] + 0.7))),
    C("c08_label_ge_outputs_validate", 8, "validate --data: a label 10 for a 10-output model",
      lambda c: _vd(c, data_npz(c, y=np.where(np.arange(360) == 0, 10, eval_arrays(c)["y_test"])))),
    C("c08_label_1e12_compress", 8, "compress npz: a label 10^12",
      lambda c: _cnpz(c, train_npz(c, y_train=np.where(np.arange(360) == 0, 10**12,
                                                       eval_arrays(c)["y_test"])))),
    C("c08_label_1e12_validate", 8, "validate --data: a label 10^12",
      lambda c: _vd(c, data_npz(c, y=np.where(np.arange(360) == 0, 10**12, eval_arrays(c)["y_test"])))),
    C("c08_manifest_layers_empty", 8, 'manifest "layers": [] (a float model as if compressed)',
      lambda c: export_of((lambda a: (edit_manifest(c, a, _layers_empty), a)[1])(c.art()))),
    C("c08_exclude_nosuchlayer", 8, "compress --exclude nosuchlayer",
      lambda c: ["compress", "--out", "out", *TOY, "--exclude", "nosuchlayer"]),
    C("x08_threshold_nan", 8, "validate --max-accuracy-drop nan",
      lambda c: _v(c, "--max-accuracy-drop", "nan")),
    C("x08_min_agreement_5", 8, "validate --min-agreement 5", lambda c: _v(c, "--min-agreement", "5")),
    C("x08_compress_steps_negative", 8, "compress --steps -5", lambda c: ["compress", "--out", "out", *TOY,
                                                                         "--steps", "-5"]),
    C("x08_compress_gamma_inf", 8, "compress --gamma inf", lambda c: ["compress", "--out", "out", *TOY,
                                                                      "--gamma", "inf"]),
    C("x08_npz_x_complex", 8, "validate --data: x is complex64",
      lambda c: _vd(c, data_npz(c, dtype=np.complex64))),
    C("x08_npz_duplicate_members", 8, "validate --data: npz with two members named x.npy",
      _duplicate_members),
    C("x08_onnx_wrong_preservation_meta", 8, "validate --run: ONNX metadata names another preservation set",
      lambda c: ["validate", edit_onnx(c, set_meta("sgsc.preservation_sha256", "0" * 64)), "--run", c.art(),
                 *LOOSE]),
    # 9 tracebacks -------------------------------------------------------------------------------------------
    C("c09_npz_nan_x_compress", 9, "compress npz: NaN in x_train",
      lambda c: _cnpz(c, train_npz(c, x_train=np.full_like(eval_arrays(c)["x_test"], np.nan)))),
    C("c09_npz_inf_x_validate", 9, "validate --data: inf in x",
      lambda c: _vd(c, data_npz(c, x=np.full_like(eval_arrays(c)["x_test"], np.inf)))),
    C("c09_npz_x_wrong_rank_validate", 9, "validate --data: x of shape [N, 64]",
      lambda c: _vd(c, data_npz(c, reshape=(64,)))),
    C("c09_npz_x_wrong_shape_compress", 9, "compress npz: x of shape [N,1,5,5] for the digits CNN",
      lambda c: _cnpz(c, train_npz(c, x_train=np.zeros((360, 1, 5, 5), np.float32),
                                   x_test=np.zeros((360, 1, 5, 5), np.float32)))),
    C("c09_model_returns_tuple", 9, "compress --model whose forward returns a tuple",
      lambda c: _cm(c, TUPLE_MODEL.replace("RESULT", "(y, y)"))),
    C("c09_model_returns_dict", 9, "compress --model whose forward returns a dict",
      lambda c: _cm(c, TUPLE_MODEL.replace("RESULT", "{'logits': y}"))),
    C("c09_model_without_layers", 9, "compress --model with no Conv/Linear",
      lambda c: _cm(c, NO_LAYER_MODEL)),
    C("c09_weights_zero_bytes", 9, "compress --weights of 0 bytes",
      lambda c: _cm(c, BENIGN_MODEL, "--weights", c.write("w.pt", b""))),
    C("c09_history_corrupt", 9, "export: history.json is not JSON",
      lambda c: export_of((lambda a: (c.write(f"{a}/history.json", "{not json"), a)[1])(c.art()))),
    C("c09_checkpoint_corrupt_resume", 9, "compress --resume with a corrupt last.pt",
      lambda c: ["compress", "--out",
                 (lambda a: (c.write(f"{a}/checkpoints/last.pt", b"PK\3\4garbage"), a)[1])(
          c.art()), "--resume", *TOY]),
    C("c09_manifest_bits_9", 9, "manifest: a channel with bits 9",
      lambda c: export_of((lambda a: (edit_manifest(c, a, _bits9), a)[1])(c.art()))),
    C("c09_seed_negative", 9, "compress --seed -5",
      lambda c: ["compress", "--out", "out", *TOY, "--seed", "-5"]),
    C("c09_out_cannot_be_created", 9, "compress --out under a regular file",
      lambda c: ["compress", "--out", c.write("blocker", "x") + "/sub", *TOY]),
    C("x09_manifest_minimal", 9, "manifest with only format, format_version and the file hashes",
      lambda c: export_of((lambda a: (edit_manifest(c, a, _minimal), a)[1])(c.art()))),
    C("x09_manifest_deep_nesting", 9, "manifest.json nested 100,000 deep",
      lambda c: export_of((lambda a: (edit_manifest(c, a, text="[" * 100000 + "]" * 100000),
                                      a)[1])(c.art()))),
    C("x09_manifest_huge_int", 9, "manifest with a 5,000-digit integer",
      lambda c: export_of((lambda a: (edit_manifest(c, a,
                                                    text='{"format": "sgsc-artifact", "format_version": '
                                                    + "9" * 5000 + "}"), a)[1])(c.art()))),
    C("x09_manifest_is_directory", 9, "artifact's manifest.json is a directory",
      lambda c: export_of((lambda a: (os.unlink(c.dir / a / "manifest.json"),
                                      os.mkdir(c.dir / a / "manifest.json"),
                                      a)[2])(c.art()))),
    C("x09_manifest_empty", 9, "manifest.json of 0 bytes",
      lambda c: export_of((lambda a: (edit_manifest(c, a, text=""), a)[1])(c.art()))),
    C("x09_onnx_is_zip", 9, "validate: an .onnx that is a zip (an npz renamed)",
      lambda c: ["validate", c.write("m.onnx", (c.base.art / "eval.npz").read_bytes()), "--run", c.art(),
                 *LOOSE]),
    C("x09_onnx_empty_inspect", 9, "inspect: an .onnx of 0 bytes",
      lambda c: ["inspect", c.write("m.onnx", b"")],
      needs_base=False),
    C("x09_onnx_empty_validate", 9, "validate: an .onnx of 0 bytes",
      lambda c: ["validate", c.write("m.onnx", b""), "--run", c.art(), *LOOSE]),
    C("x09_onnx_text_inspect", 9, "inspect: a text file named .onnx",
      lambda c: ["inspect", c.write("m.onnx", "hello, I am not a model\n")], needs_base=False),
    C("x09_onnx_missing", 9, "validate: the .onnx does not exist",
      lambda c: ["validate", "missing.onnx", "--data", "npz:missing.npz"], needs_base=False),
    C("x09_onnx_nested_subgraphs", 9, "inspect: If nested 20 deep", lambda c: ["inspect", nested_if(c)],
      expect=(0, 2)),
    C("x09_onnx_nested_validate", 9, "validate: If nested 20 deep", lambda c: _vd(c, data_npz(c),
                                                                                  onnx_rel=nested_if(c))),
    C("x09_onnx_cyclic", 9, "validate: a graph with a cycle",
      lambda c: _vd(c, data_npz(c), onnx_rel=cyclic(c))),
    C("x09_npz_empty_file", 9, "validate --data: npz of 0 bytes", lambda c: _vd(c, c.write("d.npz", b""))),
    C("x09_npz_is_directory", 9, "validate --data: npz:PATH is a directory",
      lambda c: (c.write("d.npz/x", "x"), _vd(c, "d.npz"))[1]),
    C("x09_unicode_run_dir", 9, "control: validate --run of an artifact in a unicode folder",
      lambda c: ["validate", c.onnx(), "--run", c.art("Résultats ✓ 日本"), *LOOSE], expect=(0,)),
    # 10 the gate misses a corrupted file --------------------------------------------------------------------
    *[C(f"c10_tampered_{p.replace('-', '')}", 10,
        f"{p}: one channel's scale negated (agreement stays ≥ 0.95)",
        lambda c, p=p: ["validate", tampered(c, p), "--run", c.art(), *LOOSE, *AGREE], expect=(1,),
        check=stdout_has("logit_parity")) for p in PROFILES],
    *[C(f"c10_honest_{p.replace('-', '')}", 10, f"control: honest {p} export passes the gate",
        lambda c, p=p: _v(c, profile=p), expect=(0,)) for p in PROFILES],
    C("c10_tampered_data_logits", 10, "validate --data with reference logits: tampered portable",
      lambda c: _vd(c, data_npz(c), *AGREE, onnx_rel=tampered(c, "portable")), expect=(1,),
      check=stdout_has("logit_parity")),
    C("c10_max_logit_diff_override", 10, "control: tampered portable with --max-logit-diff 1000",
      lambda c: ["validate", tampered(c, "portable"), "--run", c.art(), *LOOSE, *AGREE,
                 "--max-logit-diff", "1000"],
      expect=(0,)),
    # 11 determinism -----------------------------------------------------------------------------------------
    C("c11_compress_twice", 11, "compress with the base's arguments: byte-identical artifact",
      lambda c: ["compress", "--out", "again", *TOY], expect=(0,), outputs=("again",),
      check=same_as_base("again", ("manifest.json", "history.json") + ART_FILES)),
    C("c11_resume_finished_run", 11, "compress --resume of a finished run changes nothing",
      lambda c: ["compress", "--out", c.art(), "--resume", *TOY], expect=(0,), outputs=("art/checkpoints",)),
    C("c11_export_twice", 11, "export of the base artifact: byte-identical ONNX",
      lambda c: export_of(c.art()), expect=(0,), outputs=("out.onnx",), check=same_onnx("out.onnx")),
]
