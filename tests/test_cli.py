"""`python -m dropout_demo`: help, a tiny run end to end, and bad arguments."""

import csv
import io
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dropout_demo.cli import main
from dropout_demo.data import normalize, subset
from dropout_demo.model import model_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(list(args), out=out, err=err)
    except SystemExit as e:  # argparse exits for --help and usage errors
        code = e.code
    return code, out.getvalue(), err.getvalue()


def test_help_lists_commands(capsys):
    code, _, _ = run_cli("--help")
    assert code == 0
    assert "train" in capsys.readouterr().out
    code, _, _ = run_cli("train", "--help")
    printed = capsys.readouterr().out
    assert code == 0
    for flag in ("--p", "--epochs", "--lr", "--batch-size", "--train-size", "--seed", "--save"):
        assert flag in printed


def test_tiny_train_run_end_to_end_via_python_m(mnist_dir, tmp_path):
    save = tmp_path / "out" / "model.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "dropout_demo", "train", "--train-size", "300", "--epochs", "2",
         "--eval-size", "500", "--seed", "1", "--data-dir", str(mnist_dir), "--save", str(save)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^Epoch \[1/2\], Loss: \d+\.\d{4}, Test loss", proc.stdout, re.M)
    assert re.search(r"^Epoch \[2/2\], Loss: \d+\.\d{4}", proc.stdout, re.M)
    match = re.search(r"Accuracy of the model on the test images: (\d+\.\d\d)%", proc.stdout)
    assert match, proc.stdout
    # the saved file loads with weights_only and reproduces the printed accuracy
    model, config = model_from_checkpoint(torch.load(save, weights_only=True))
    assert (config.train_size, config.epochs, config.seed) == (300, 2, 1)
    from dropout_demo.data import get_mnist

    data = get_mnist(mnist_dir)
    images, labels = subset(data.test_images, data.test_labels, 500, 1)
    with torch.no_grad():
        acc = (model(normalize(images)).argmax(1) == labels).float().mean().item()
    assert f"{100 * acc:.2f}" == match.group(1)


def test_train_says_what_the_test_metrics_used_and_how_it_computed(mnist_dir):
    code, out, err = run_cli(
        "train", "--train-size", "128", "--epochs", "2", "--data-dir", str(mnist_dir), "--quiet"
    )
    assert code == 0, err
    # epoch 1 on the per-epoch subset, the last epoch on the whole test set
    assert re.search(r"^Epoch \[1/2\], .*% on 2,000 test images \(", out, re.M), out
    assert re.search(r"^Epoch \[2/2\], .*% on 10,000 test images \(", out, re.M), out
    match = re.search(r"^Trained on cpu, (fp32|bf16) arithmetic \((fp32|bf16), (\w+), (.+); "
                      r"picked by a measured probe\)$", out, re.M)  # fmt: skip
    assert match and match.group(1) == match.group(2), out
    code, out, err = run_cli(
        "train", "--train-size", "64", "--epochs", "1", "--eval-size", "100",
        "--precision", "fp32", "--data-dir", str(mnist_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"^Trained on cpu, fp32 arithmetic \(fp32, .*; as asked\)$", out, re.M), out
    assert "on 100 test images" in out


def test_sweep_prints_a_comparison(mnist_dir, tmp_path):
    csv_path = tmp_path / "sweep.csv"
    code, out, err = run_cli(
        "sweep", "--p", "0", "0.5", "--train-size", "200", "--epochs", "1", "--eval-size", "300",
        "--data-dir", str(mnist_dir), "--csv", str(csv_path), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"^0\.00 \|", out, re.M) and re.search(r"^0\.50 \|", out, re.M)
    assert csv_path.read_text().count("\n") == 3  # header + one epoch per run


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--p", "1.5"], "p must be in [0, 1)"),
        (["train", "--epochs", "0", "--lr", "-1"], "epochs must be"),
        (["train", "--epochs", "abc"], "invalid int value"),
        (["train", "--train-size", "70000"], "train_size must be"),
        (["train", "--batch-size", "0"], "batch_size must be"),
        (["train", "--precision", "fp8"], "precision must be one of"),
        (["fly"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, expected, capsys):
    code, _, _ = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_missing_data_is_a_message_not_a_traceback(tmp_path):
    code, _, err = run_cli("train", "--data-dir", str(tmp_path), "--epochs", "1")
    assert code == 1
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err
    assert "Traceback" not in err


def test_save_to_a_directory_is_refused(tmp_path, capsys):
    code, _, _ = run_cli("train", "--save", str(tmp_path))
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_unwritable_output_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, _ = run_cli("train", "--save", str(blocker / "sub" / "m.pt"))
    assert code == 2 and "cannot create its directory" in capsys.readouterr().err
    code, _, _ = run_cli("sweep", "--csv", str(tmp_path))
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_sweep_over_p_and_seeds_prints_mean_std_and_writes_one_row_per_run(mnist_dir, tmp_path):
    csv_path, epochs_path = tmp_path / "runs.csv", tmp_path / "epochs.csv"
    code, out, err = run_cli(
        "sweep", "--p", "0", "0.5", "--seeds", "0", "1", "--train-size", "100", "--epochs", "2",
        "--eval-size", "200", "--data-dir", str(mnist_dir), "--csv", str(csv_path),
        "--epochs-csv", str(epochs_path), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "Sweep: 2 dropout rates × 2 seeds = 4 runs" in out
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [(r["p"], r["seed"], r["status"]) for r in rows] == [
        ("0.0", "0", "done"), ("0.5", "0", "done"), ("0.0", "1", "done"), ("0.5", "1", "done"),
    ]  # fmt: skip
    assert {r["train_size"] for r in rows} == {"100"}
    for p, label in (("0.0", "0.00"), ("0.5", "0.50")):
        losses = [float(r["final_test_loss"]) for r in rows if r["p"] == p]
        gaps = [float(r["gap"]) for r in rows if r["p"] == p]
        line = re.search(rf"^{label} \|  2 \| (.*)$", out, re.M)
        assert line, out
        cols = [c.strip() for c in line.group(1).split("|")]
        expected = f"{statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f}"
        assert cols[0] == expected
        assert cols[3] == f"{statistics.mean(gaps):.4f} ± {statistics.stdev(gaps):.4f}"
    assert re.search(r"^Reading: Lowest final test loss at p = 0(\.5)?: ", out, re.M)
    epoch_rows = list(csv.DictReader(io.StringIO(epochs_path.read_text())))
    assert len(epoch_rows) == 4 * 2 and epoch_rows[1]["epoch"] == "2"
    assert float(epoch_rows[1]["test_loss"]) == float(rows[0]["final_test_loss"])


def test_sweep_over_training_set_sizes(mnist_dir, tmp_path):
    csv_path = tmp_path / "sizes.csv"
    code, out, err = run_cli(
        "sweep", "--sizes", "100", "50", "--seed", "3", "--epochs", "1", "--eval-size", "200",
        "--data-dir", str(mnist_dir), "--csv", str(csv_path), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "Sweep: 2 sizes × 2 dropout rates × 1 seed = 4 runs" in out
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [(r["train_size"], r["p"], r["seed"]) for r in rows] == [
        ("50", "0.0", "3"), ("50", "0.5", "3"), ("100", "0.0", "3"), ("100", "0.5", "3"),
    ]  # fmt: skip
    for size in ("50", "100"):
        assert re.search(rf"^ +{size} \| 0\.00 \|  1 \|", out, re.M)
        assert re.search(rf"^ +{size} \| 0\.50 vs 0\.00 \| [+-]\d\.\d{{4}} ± 0\.0000", out, re.M)
    assert re.search(
        r"^Reading: Dropout \(p = 0\.5\) .* \(Some points have a single seed", out, re.M
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--p", "0", "0"], "p: duplicate value(s) 0"),
        (["--p", "1.5"], "dropout rate must be in [0, 1)"),
        (["--seeds", "-1"], "seed must be an integer >= 0"),
        (["--seeds", "2", "2"], "seeds: duplicate value(s) 2"),
        (["--seeds"], "expected at least one argument"),
        (["--sizes", "0"], "training-set size must be an integer in 1..60,000"),
        (["--sizes", "many"], "invalid int value"),
        (["--p", *(str(i / 20) for i in range(20)), "--seeds", *map(str, range(6))], "too many"),
        (["--epochs", "0", "--p", "2"], "epochs must be an integer >= 1, got 0; p: a dropout rate"),
    ],
)
def test_bad_sweep_arguments_exit_2_with_a_message(args, expected, capsys, tmp_path):
    code, _, _ = run_cli("sweep", *args, "--data-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_sweep_unwritable_epochs_csv_is_refused_before_training(tmp_path, capsys):
    code, _, _ = run_cli("sweep", "--epochs-csv", str(tmp_path), "--data-dir", str(tmp_path))
    assert code == 2 and "is a directory" in capsys.readouterr().err


def test_interrupted_sweep_still_writes_what_finished(mnist_dir, tmp_path, monkeypatch):
    import dropout_demo.cli as cli

    calls = []

    def fit_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    real_fit = cli.fit
    monkeypatch.setattr(cli, "fit", fit_then_interrupt)
    csv_path = tmp_path / "runs.csv"
    code, out, err = run_cli(
        "sweep", "--p", "0", "0.5", "0.7", "--train-size", "100", "--epochs", "1",
        "--eval-size", "200", "--data-dir", str(mnist_dir), "--csv", str(csv_path), "--quiet",
    )  # fmt: skip
    assert code == 130 and "interrupted" in err
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["status"] for r in rows] == ["done", "interrupted", "not run"]
    assert "(2 of 3 runs did not finish and are left out)" in out


def test_sweep_help_lists_grid_flags(capsys):
    code, _, _ = run_cli("sweep", "--help")
    printed = capsys.readouterr().out
    assert code == 0
    for flag in ("--p", "--seeds", "--seed", "--sizes", "--csv", "--epochs-csv"):
        assert flag in printed


@pytest.mark.mnist
def test_sweep_on_ray_runs_the_cells_as_tasks_and_matches_the_sequential_sweep(
    mnist_dir, tmp_path, ray_cluster
):
    common = (
        "sweep", "--p", "0", "0.5", "--seeds", "0", "--train-size", "256", "--epochs", "2",
        "--eval-size", "200", "--data-dir", str(mnist_dir), "--quiet", "--precision", "fp32",
    )  # fmt: skip
    code, out, err = run_cli(*common, "--csv", str(tmp_path / "ray.csv"), "--ray", "local")
    assert code == 0, err
    assert "Running the 2 runs as Ray tasks in parallel on the cluster at local" in out
    assert re.search(r"^\[1/2\] Epoch \[2/2\]", out, re.M) and re.search(r"^\[2/2\] ", out, re.M)
    code, _, err = run_cli(*common, "--csv", str(tmp_path / "here.csv"))
    assert code == 0, err
    on_ray, here = (
        list(csv.DictReader(io.StringIO((tmp_path / name).read_text())))
        for name in ("ray.csv", "here.csv")
    )
    assert [(r["p"], r["status"]) for r in on_ray] == [("0.0", "done"), ("0.5", "done")]
    for a, b in zip(on_ray, here, strict=True):  # same seeds, same data: the same runs
        assert float(a["final_test_loss"]) == pytest.approx(float(b["final_test_loss"]), rel=1e-3)


def test_sweep_on_ray_without_ray_installed_is_a_clear_error(mnist_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if absent
    code, out, err = run_cli(
        "sweep", "--p", "0", "--seeds", "0", "--train-size", "100", "--epochs", "1",
        "--data-dir", str(mnist_dir), "--quiet", "--ray", "local",
    )  # fmt: skip
    assert code == 1
    assert "requirements-ray.txt" in err and "Traceback" not in err + out
