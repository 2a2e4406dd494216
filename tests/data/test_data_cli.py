"""``medalpy data``: each sub-command, and bad input as a one-line message with exit code 2."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import medalpy.data.registry as registry
from medalpy.cli import main

SAMPLE = registry.bundled_dir() / "mnist-sample"


def run(*args, **env):
    return CliRunner().invoke(main, ["data", *args], env=env or None)


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_list_and_path_and_info():
    result = run("list")
    assert result.exit_code == 0
    for name in ("mnist", "mnist-sample", "fashion-mnist", "cifar10", "cifar100"):
        assert name in result.output
    result = run("path", "mnist-sample")
    assert result.exit_code == 0 and result.output.strip() == str(SAMPLE)
    result = run("info", "cifar10", "--json")
    d = json.loads(result.output)
    assert d["files"]["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
    assert result.exit_code == 0 and "found" in d


def test_verify_sample_good():
    result = run("verify", "mnist-sample")
    assert result.exit_code == 0 and result.output.count("good  ") == 4


def _sample_copy(tmp_path, mutate):
    d = tmp_path / "mnist-sample"
    d.mkdir()
    for f in SAMPLE.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    mutate(d / "train-images-idx3-ubyte.gz")
    return tmp_path


BAD = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "truncated gzip stream"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "wrong magic": (lambda p: p.write_bytes(b"\0\1\x08\x03" + b"\0" * 12), "wrong magic"),
    "not gzip, garbage": (lambda p: p.write_bytes(b"hello world"), "wrong magic"),
    "directory": (lambda p: (p.unlink(), p.mkdir()), "is a directory"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_verify_bad_file(tmp_path, case):
    mutate, fragment = BAD[case]
    root = _sample_copy(tmp_path, mutate)
    result = run("verify", "mnist-sample", "--data-dir", str(root))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "BAD   " in result.output and fragment in result.output
    assert "1 of 4 files of mnist-sample are bad" in result.output


@pytest.mark.parametrize("case", list(BAD))
def test_load_of_bad_file_names_it(tmp_path, case):
    # verify names every file; load-based commands stop at the first, one line
    mutate, fragment = BAD[case]
    root = _sample_copy(tmp_path, mutate)
    from medalpy.data import load
    from medalpy.errors import DataError

    with pytest.raises(DataError, match=fragment):
        load("mnist-sample", root)


def test_unknown_dataset_one_line():
    line = _one_line_error(run("info", "nope"))
    assert "unknown dataset 'nope'" in line


def test_path_not_found_one_line(tmp_path):
    line = _one_line_error(run("path", "cifar10", "--data-dir", str(tmp_path)))
    assert "not found; tried:" in line and str(tmp_path / "cifar10") in line


def test_fetch_offline_one_line(tmp_path, offline):
    line = _one_line_error(run("fetch", "cifar10", "--data-dir", str(tmp_path)))
    assert "cannot download cifar10" in line and "cifar-10-python.tar.gz" in line
    assert not (tmp_path / "cifar10").exists()


def test_fetch_already_present():
    result = run("fetch", "mnist-sample")
    assert result.exit_code == 0 and "already present" in result.output


def test_data_dir_is_a_file(tmp_path):
    (tmp_path / "mnist-sample").write_text("x")
    line = _one_line_error(run("path", "mnist-sample", "--data-dir", str(tmp_path)))
    assert "is not a directory" in line


def test_cli_module_does_not_import_numba():
    code = ("import sys, medalpy.cli.data; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
