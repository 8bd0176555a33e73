"""Bad input to `python -m btrans_verl.eval` is refused with a message naming the value, exit status 2, before any
vLLM engine is started (the engine starter is replaced by one that fails the test)."""

import subprocess
import sys

import pytest

from btrans_verl.eval import pipeline
from btrans_verl.eval.config import EvalConfig, EvalInputError
from btrans_verl.eval.run import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny untrained Qwen3 with the smoke tokenizer (no answer training: only its tokenizer matters here)."""
    from btrans_verl.tiny import tiny_model, write_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_for_errors")
    tok = write_tiny_tokenizer(path)
    tiny_model("qwen3", vocab=64 * ((len(tok) + 63) // 64)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from data_prep.cli import main as data_prep_main

    out = tmp_path_factory.mktemp("gsm8k")
    assert data_prep_main(["gsm8k", "--src", "vendor", "--split", "test", "--out", str(out), "--no-progress"]) == 0
    return out / "test.parquet"


@pytest.fixture(autouse=True)
def no_engine(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a vLLM engine was started for bad input")

    monkeypatch.setattr(pipeline, "start_engine", refuse)


def _fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    return err


def _args(model_dir, bench, tmp_path, *extra):
    return ["--model", str(model_dir), "--benchmark", str(bench), "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize("extra, needles", [
    (["--n", "4", "--ks", "1,2,8"], ["K=8 > n=4"]),
    (["--n", "4"] + ["--ks", "16"], ["K=16 > n=4"]),
    (["--sigma", "-0.1"], ["sigma must be >= 0, got -0.1"]),
    (["--sigma", "0"], ["sigma = 0", "'btrans'", "'token'"]),
    (["--sigma", "nan"], ["sigma must be a finite number"]),
    (["--n", "0"], ["n must be >= 1, got 0"]),
    (["--temperature", "-1"], ["temperature must be >= 0, got -1.0"]),
    (["--temperature", "0"], ["method 'temperature' needs temperature > 0"]),
    (["--methods", "mean,beam"], ["'beam'"]),
    (["--seed", "-3"], ["seed must be in [0, 9223372036854775808), got -3"]),
    (["--limit", "0"], ["limit must be >= 1, got 0"]),
    (["--max-tokens", "600", "--max-model-len", "512"], ["max_tokens (600) must be < max_model_len (512)"]),
    (["--max-tokens", "480", "--max-model-len", "512"], ["problem 0 has a", "max_model_len - max_tokens - 1 = 31"]),
])
def test_bad_values_are_named(capsys, model_dir, bench, tmp_path, extra, needles):
    _fails(capsys, _args(model_dir, bench, tmp_path, *extra), *needles)


def test_bad_benchmarks_are_named(capsys, model_dir, bench, tmp_path):
    _fails(capsys, _args(model_dir, "gsm9k", tmp_path), "unknown benchmark 'gsm9k'", "gsm8k", "minerva")
    _fails(capsys, _args(model_dir, tmp_path / "missing" / "test.parquet", tmp_path), "missing/test.parquet",
           "no such file")
    (tmp_path / "notes.txt").write_text("x")
    _fails(capsys, _args(model_dir, tmp_path / "notes.txt", tmp_path), "notes.txt", "not a .parquet")
    _fails(capsys, _args(model_dir, bench.parent, tmp_path, "--split", "dev"), "has no dev.parquet", "test.parquet")
    _fails(capsys, _args(model_dir, "math500", tmp_path, "--data-src", "vendor"), "'math500'",
           "no vendored data")


def test_bad_models_are_named(capsys, model_dir, bench, tmp_path):
    _fails(capsys, _args(tmp_path / "nope", bench, tmp_path), "nope", "no such folder")
    cfg_only = tmp_path / "cfg_only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text((model_dir / "config.json").read_text())
    _fails(capsys, _args(cfg_only, bench, tmp_path), "cfg_only", "no weights", "verl.model_merger")


def test_a_model_without_chat_template_needs_the_flag(capsys, model_dir, bench, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (plain / f.name).write_bytes(f.read_bytes())
    _fails(capsys, _args(plain, bench, tmp_path), "no chat template", "--no-chat-template")


def test_out_must_be_a_folder(capsys, model_dir, bench, tmp_path):
    (tmp_path / "file").write_text("x")
    _fails(capsys, ["--model", str(model_dir), "--benchmark", str(bench), "--out", str(tmp_path / "file")],
           "exists and is not a folder")


def test_config_is_validated_at_construction(tmp_path):
    with pytest.raises(EvalInputError, match="K=4 > n=2"):
        EvalConfig(model="m", benchmark="b", out=tmp_path, n=2, ks=(1, 4))
    cfg = EvalConfig(model="m", benchmark="b", out=tmp_path, n=6, methods=("token", "mean"))
    assert cfg.ks == (1, 2, 4) and cfg.methods == ("mean", "token")
    # only the mean mind: n and K do not matter, temperature 0 is fine
    EvalConfig(model="m", benchmark="b", out=tmp_path, n=1, temperature=0.0, sigma=0.0, methods=("mean",))


def test_the_real_command_exits_2_naming_the_value(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "btrans_verl.eval", "--model", "m", "--benchmark", "gsm8k",
                           "--out", str(tmp_path), "--sigma", "-2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sigma must be >= 0, got -2.0" in proc.stderr, proc.stderr
    assert "vllm" not in proc.stderr.lower()  # nothing of vLLM was even imported
