"""`sgsc compress` chooses the char transformer for text data sets; --preservation-file; clear errors."""

import json

from click.testing import CliRunner

from sgsc_export.cli import main
from tests.conftest import NAMES_DIR, names_subset


def test_compress_text_dataset_with_preservation_file(tmp_path):
    data = names_subset(tmp_path, 400)
    out = tmp_path / "run"
    args = ["compress", "--dataset", f"text:{data}", "--out", str(out), "--steps", "4", "--float-epochs", "0",
            "--finetune-steps", "0", "--preservation-file", str(NAMES_DIR / "hardest_examples.txt"),
            "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "perplexity" in res.output and "next-token" in res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["factory"] == "sgsc_export.charlm:char_transformer"
    assert m["model"]["kwargs"] == {"vocab_size": 27, "context": 32}
    assert m["language_model"]["preservation_source"] == "file:hardest_examples.txt"
    assert m["preservation"]["size"] == 1000 and m["preservation"]["criteria_counts"] == [0, 0, 0, 1000]


def test_names_without_data_dir_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(main, ["compress", "--dataset", "names", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "--data-dir" in res.output and "text:PATH" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_preservation_file_needs_a_text_dataset(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("ab\n")
    res = CliRunner().invoke(main, ["compress", "--dataset", "digits", "--out", str(tmp_path / "x"),
                                    "--preservation-file", str(p)])
    assert res.exit_code == 2 and "text data sets" in res.output
