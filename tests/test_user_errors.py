"""Issue 16, user errors in one line: each bad invocation below exits with status 2 and prints exactly one stderr line,
`error: ...`, naming the bad value, and no traceback; `--debug` / MEDVL_DEBUG=1 show the traceback; under
`medvl launch` (accelerate launch without its traceback on a user error) with 2 processes the line is printed once
(rank 0) and nothing else.

`medvl` cases run as real subprocesses (in parallel: the CLI imports lazily). The scripts' cases (pretrain.py,
evaluate_model.py, ablate.py: seconds of imports each) run in ONE subprocess that calls each script's `main` through
`run_main`, as its `__main__` block does, with file descriptor 2 captured per case; the launch case runs
train/pretrain.py itself on both ranks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_on_a_free_port

REPO = Path(__file__).resolve().parents[1]
MEDVL = [sys.executable, "-m", "train.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MEDVL_DEBUG": "", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_errors")
    (root / "a_file").write_text("x")
    (root / "a_dir").mkdir()
    (root / "unknown_key.yaml").write_text("output_dir: x\ndata: [synthcxr:n=8]\nlearning_rte: 0.1\n")
    return root


# (arguments, text the line must contain); {tmp} is a fresh folder with a_file, a_dir, unknown_key.yaml.
CLI_CASES = [
    ("data synth --n -5 --out {tmp}/s", "--n: -5"),
    ("data synth --n abc --out {tmp}/s", "'abc'"),
    ("data synth --n 2 --out {tmp}/a_file", "a_file is a file"),
    ("data synth --out {tmp}/s", "required: --n"),
    ("data synth --n 2 --out {tmp}/s --bogus", "--bogus"),
    ("data synth --n 2 --out {tmp}/s --size 2", "--size: 2"),
    ("data synth --n 2 --out {tmp}/s --layouts nosuch", "'nosuch'"),
    ("data preview --out {tmp}/p.png --mix flu", "'flu'"),
    ("data preview --out {tmp}/p.png --data {tmp}/nowhere", "nowhere"),
    ("data preview --out {tmp}/a_dir", "a_dir is a folder"),
    ("tokenizer train --input {tmp}/missing.jsonl --out {tmp}/t", "missing.jsonl"),
    ("tokenizer train --input {tmp}/a_file --out {tmp}/t --style gpt", "'gpt'"),
    ("tokenizer train --input {tmp}/a_file --out {tmp}/t --vocab-size many", "'many'"),
    ("convert --from bogus --src x --out {tmp}/c", "'bogus'"),
    ("convert --from clip --src {tmp}/nowhere --out {tmp}/c", "nowhere"),
    ("convert --from clip --src {tmp}/a_dir --out {tmp}/a_file", "a_file is a file"),
    ("export --checkpoint {tmp}/nowhere --out {tmp}/e", "nowhere"),
    ("export --checkpoint {tmp}/a_dir --out {tmp}/e --lora both", "'both'"),
    ("push {tmp}/nowhere --repo org/name --dry-run", "nowhere"),
    ("push {tmp}/a_dir", "--repo"),
    ("nosuch", "'nosuch'"),
]

# (module, arguments, text the line must contain)
SCRIPT_CASES = [
    ("pretrain", "--data foo:/tmp --output_dir {tmp}/p", "'foo:/tmp'"),
    ("pretrain", "--data synthcxr:n=-1 --output_dir {tmp}/p", "synthcxr:n=-1"),
    ("pretrain", "--data mimic-cxr:{tmp}/nowhere --output_dir {tmp}/p --report_to none", "nowhere"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/a_file", "a_file is a file"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --model_preset huge", "'huge'"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --model_overrides nosuch=1", "'nosuch'"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --model_overrides itm_weight", "'itm_weight'"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --bogus 1", "--bogus"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --per_device_batch_size x", "'x'"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --mixed_precision fp8", "'fp8'"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --warmup_ratio 2", "--warmup_ratio"),
    ("pretrain", "--data synthcxr:n=8 --output_dir {tmp}/p --max_steps 0", "--max_steps"),
    ("pretrain", "--config {tmp}/missing.yaml", "missing.yaml"),
    ("pretrain", "--config {tmp}/unknown_key.yaml", "learning_rte -> learning_rate?"),
    ("pretrain", "--data synthcxr:n=8,size=32 --output_dir {tmp}/p --per_device_batch_size 4 "
                 "--global_batch_size 10 --report_to none", "--global_batch_size 10"),
    ("evaluate_model", "--model {tmp}/nowhere --data synthcxr:n=8", "nowhere"),
    ("evaluate_model", "--model {tmp}/a_dir --data synthcxr:n=8 --split train", "'train'"),
    ("evaluate_model", "--model {tmp}/a_dir --data synthcxr:n=8 --threshold 2", "--threshold"),
    ("evaluate_model", "--model {tmp}/a_dir", "--data"),
    ("ablate", "--bogus 1", "--bogus"),
    ("ablate", "--steps x", "'x'"),
]

# Runs `cases` (a JSON list of [module, argv]) through run_main with fd 2 captured; prints [status, stderr] per case.
DRIVER = r"""
import importlib, json, os, sys, tempfile
from train.user_errors import run_main

results = []
for module, argv in json.loads(sys.argv[1]):
    script = importlib.import_module(f"train.{module}")
    main = getattr(script, "cli", None) or script.main
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            run_main(main, argv)
            status = 0
        except SystemExit as error:
            status = error.code
        except BaseException as error:
            status = f"raised {type(error).__name__}: {error}"
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        results.append([status, captured.read().decode(errors="replace")])
print("RESULTS " + json.dumps(results))
"""


def check_one_line(status, stderr, expected, what):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, f"{what}: status {status}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, f"{what}:\n{stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: not one error line:\n{stderr}"
    assert expected in lines[0], f"{what}: {lines[0]!r} does not name {expected!r}"


def test_medvl_user_errors_are_one_line(paths):
    runs = [(arguments, expected, subprocess.Popen(
        MEDVL + arguments.format(tmp=paths).split(), cwd=REPO, env=ENV, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)) for arguments, expected in CLI_CASES]
    for arguments, expected, process in runs:
        _, stderr = process.communicate(timeout=300)
        check_one_line(process.returncode, stderr, expected, f"medvl {arguments}")


def test_script_user_errors_are_one_line(paths):
    cases = [[module, arguments.format(tmp=paths).split()] for module, arguments, _ in SCRIPT_CASES]
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cases)], cwd=REPO, env=ENV, text=True,
                            capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    for (module, arguments, expected), (status, stderr) in zip(SCRIPT_CASES, results):
        check_one_line(status, stderr, expected, f"train/{module}.py {arguments}")


def test_debug_shows_the_traceback(paths):
    arguments = MEDVL + ["data", "synth", "--n", "-5", "--out", str(paths / "s")]
    for extra, env in (([], {**ENV, "MEDVL_DEBUG": "1"}), (["--debug"], ENV)):
        result = subprocess.run(arguments + extra, cwd=REPO, env=env, text=True, capture_output=True, timeout=300)
        assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr


def test_a_bug_keeps_its_traceback():
    from train.user_errors import run_main

    def buggy(argv):
        raise ValueError("a bug, not a user error")

    with pytest.raises(ValueError, match="a bug"):
        run_main(buggy, [])


@pytest.mark.slow
def test_medvl_launch_prints_the_line_once_and_nothing_else(paths):
    """`medvl launch` is `accelerate launch` (2 gloo ranks on CPU here) without the launcher's traceback on top of the
    script's user error; rank 1 prints nothing."""
    result = run_on_a_free_port(
        lambda port: MEDVL + ["launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                              "train/pretrain.py", "--data", "foo:/tmp", "--output_dir", str(paths / "acc")],
        cwd=REPO, env=ENV, timeout=300)
    check_one_line(result.returncode, result.stderr, "'foo:/tmp'", "medvl launch ... train/pretrain.py")
