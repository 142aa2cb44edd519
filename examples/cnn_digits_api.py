"""The Python API end to end on scikit-learn's digits: compress → export → validate, no command line.

    python examples/cnn_digits_api.py [OUT_DIR]                    # the defaults (about a minute)
    STEPS=30 FLOAT_EPOCHS=2 GAMMA=0.05 python examples/cnn_digits_api.py   # toy size, as the tests run it

Exit code: the validation gate's (0 passed, 1 a threshold failed, 2 could not run).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import converters
import runtime_checks
from sgsc_export import CompressConfig, CompressedModel, compress, load_dataset
from sgsc_export.models import digits_cnn


def main(out_dir: str | Path) -> runtime_checks.Report:
    out = Path(out_dir)
    data = load_dataset("digits")                                   # a Split: x/y train and test, numpy
    defaults = CompressConfig()                                     # a typed, validated dataclass
    steps = os.environ.get("STEPS")                                 # unset: epochs of the training split
    config = defaults.replace(
        steps=int(steps) if steps else None,
        float_epochs=int(os.environ.get("FLOAT_EPOCHS", defaults.float_epochs)),
        gamma=float(os.environ.get("GAMMA", defaults.gamma)))

    compressed = compress(digits_cnn(), data, config, out_dir=out,  # trains the float model first
                          model_spec={"factory": "sgsc_export.models:digits_cnn",
                                      "kwargs": {"num_classes": 10}})
    # the same artifact, every file's SHA-256 checked
    compressed = CompressedModel.load(out)
    metrics = compressed.manifest["metrics"]
    print(f"float {metrics['float']['test_accuracy']:.4f} → "
          f"compressed {metrics['compressed']['test_accuracy']:.4f} test accuracy "
          f"at {compressed.manifest['totals']['ratio']:.4f} of the fp32 bits")

    exported = converters.export(compressed, out / "model.onnx", profile="compact")  # an ExportResult
    print(exported.table.render())

    report = runtime_checks.validate(exported.path, compressed, latency=False)  # a Report
    print(report.to_markdown())
    return report


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="sgsc-digits-")
    sys.exit(main(target).exit_code)
