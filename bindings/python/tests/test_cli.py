"""python -m rwkvpeft forwards to the C tools with their own flags."""
import os
import subprocess
import sys

import pytest

import rwkvpeft
from rwkvpeft import cli

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(rwkvpeft.__file__)))


def run(*args, **kw):
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RWKVPEFT_LIB", rwkvpeft.library_path())
    return subprocess.run([sys.executable, "-m", "rwkvpeft", *args], capture_output=True,
                          text=True, env=env, timeout=300, **kw)


def test_usage():
    r = run()
    assert r.returncode == 2 and "train" in r.stdout
    r = run("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_info():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert rwkvpeft.version() in r.stdout and "backend cpu" in r.stdout


needs_tools = pytest.mark.skipif(cli.find_tool("rwkvpeft-data") is None,
                                 reason="C tools not found next to the library or on PATH")


@needs_tools
def test_tools_help():
    cmds = ["train", "data", "eval"] + (["merge"] if cli.find_tool("rwkvpeft-merge") else [])
    for cmd in cmds:
        r = run(cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert ("rwkvpeft-" + cmd) in (r.stdout + r.stderr)


@needs_tools
def test_data_and_train_through_the_cli(tmp_path, vocab_path, sample_jsonl):
    prefix = str(tmp_path / "keeper")
    r = run("data", "jsonl", "--input", sample_jsonl, "--output-prefix", prefix,
            "--vocab", vocab_path, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "data_nums: 12" in r.stdout
    r = run("train", "--backend", "cpu", "--quiet", "--data_file", prefix, "--n_layer", "1",
            "--n_embd", "32", "--head_size_a", "32", "--vocab_size", "65536", "--ctx_len", "16",
            "--micro_bsz", "2", "--epoch_steps", "2", "--epoch_count", "1", "--epoch_save", "1",
            "--peft", "lora", "--lora_config", '{"lora_r":2,"lora_alpha":4}',
            "--proj_dir", str(tmp_path / "out"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "out" / "rwkv-0.pth").exists()
    r = run("train", "--no_such_flag", "1")
    assert r.returncode != 0


@needs_tools
def test_unknown_flag_is_rejected_by_the_tool():
    r = run("eval", "--no_such_flag", "x")
    assert r.returncode != 0
