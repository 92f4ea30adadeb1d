"""FCIB in a sibling process (model/encoder_process.py): the same features bit for bit, the same errors, and
no process left behind, whether the command ends well, fails or is killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from DFM50NLib.errors import DFM50NError, WeightsError
from DFM50NLib.model import encoder_process, fcib
from DFM50NLib.model.encoder_process import EncoderProcess

ROOT = Path(__file__).resolve().parents[2]


def cubes(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(-400.0, 350.0, (n, 50, 50, 50)).astype(np.float32)


def tagged_env(**extra):
    """The environment with a unique tag, to find every process a command started in /proc afterwards."""
    tag = uuid.uuid4().hex
    return tag, dict(os.environ, DFM50N_TEST_TAG=tag, **extra)


def processes_with(tag) -> list:
    """pids of live (not zombie) processes whose environment holds DFM50N_TEST_TAG=tag."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"DFM50N_TEST_TAG={tag}".encode() in env and state != "Z":
            found.append(int(proc.name))
    return found


def wait_until_gone(tag, seconds=10.0) -> list:
    deadline = time.monotonic() + seconds
    while (left := processes_with(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@contextlib.contextmanager
def torch_threads(n):
    """This process's torch thread count set to `n` (the child's): oneDNN's sums are bit-equal only at equal
    thread counts."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def test_features_and_hash_equal_the_in_process_encoder(random_weights, monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the child's torch thread count (default: one per core)
        monkeypatch.setenv(var, "2")
    x = cubes()
    local = fcib.get_encoder(random_weights)
    with EncoderProcess(random_weights) as remote:
        got = remote.features(x)
        one = remote.features(x[1])
        assert remote.weights_sha256 == local.weights_sha256
        own = remote.ready()
        proc = remote._proc
    assert got.dtype == np.float32 and got.shape == (3, 4096)
    assert own["threads"] == 2
    with torch_threads(own["threads"]):
        assert np.array_equal(got, local.features(x))  # bit for bit: same torch, same threads, same weights
        assert np.array_equal(one, local.features(x[1]))  # (a batch of 1 is not bit-equal to a row of a batch of 3)
    assert own["model_import"] > 0 and own["model_load"] > 0 and own["forward"] > 0
    assert proc.poll() is not None  # closed: the child is gone and reaped


def test_weights_errors_come_back_with_their_type_and_message(tmp_path):
    bad = tmp_path / "model_weights.torch"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    with pytest.raises(WeightsError) as local:
        fcib.get_encoder(bad)
    with EncoderProcess(bad) as remote:
        with pytest.raises(WeightsError) as far:
            remote.features(cubes(1))
        with pytest.raises(WeightsError):  # asked again: the same error, no hang waiting for a second reply
            remote.ready()
    assert str(far.value) == str(local.value)


def test_a_child_that_dies_is_an_error_not_a_hang(random_weights):
    with EncoderProcess(random_weights) as remote:
        remote.ready()
        os.kill(remote._proc.pid, signal.SIGKILL)
        with pytest.raises(DFM50NError, match=r"FCIB process ended unexpectedly \(exit code -9"):
            remote.features(cubes(1))


def test_missing_torch_in_the_child_says_how_to_install_it(random_weights, tmp_path, monkeypatch):
    fake = tmp_path / "shadow" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (test shadow)')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    with EncoderProcess(random_weights) as remote:
        with pytest.raises(DFM50NError, match=r'PyTorch cannot be imported .*pip install "torch>=2.2"'):
            remote.ready()


def run_cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "DFM50NLib", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_cold_cli_score_equals_in_process_score_and_leaves_no_process(random_weights, tmp_path):
    from DFM50NLib.io.demo_case import write_demo_case
    from DFM50NLib.scoring.pipeline import score_case

    ct, mask = write_demo_case(tmp_path / "case")
    tag, env = tagged_env(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    out = run_cli(["score", "--image", ct, "--mask", mask, "--weights", random_weights, "--out", tmp_path / "o"], env)
    assert out.returncode == 0, out.stderr
    got = json.loads(next((tmp_path / "o").glob("*.dfm50n.json")).read_text())
    assert got["timings"]["fcib_process_import"] > 0  # the sibling process did load the model
    with torch_threads(2):  # as the child (OMP_NUM_THREADS, MKL_NUM_THREADS)
        score_case(ct, mask, weights=random_weights, out_dir=tmp_path / "in_process")
    want = json.loads(next((tmp_path / "in_process").glob("*.dfm50n.json")).read_text())
    for key in ("score", "features", "fcib_weights_sha256", "center_ras", "mask_voxels", "long_axis_mm"):
        assert got[key] == want[key], key
    assert wait_until_gone(tag, seconds=2.0) == []


def test_in_process_switch_gives_the_same_score(random_weights, tmp_path):
    from DFM50NLib.io.demo_case import write_demo_case

    ct, mask = write_demo_case(tmp_path / "case")
    scores = {}
    for flag in ("1", "0"):
        _, env = tagged_env(DFM50N_ENCODER_PROCESS=flag)
        out_dir = tmp_path / f"o{flag}"
        out = run_cli(["score", "--image", ct, "--mask", mask, "--weights", random_weights, "--out", out_dir], env)
        assert out.returncode == 0, out.stderr
        res = json.loads(next(out_dir.glob("*.dfm50n.json")).read_text())
        scores[flag] = (res["score"], res["features"], "fcib_process_import" in res["timings"])
    assert scores["1"][:2] == scores["0"][:2]
    assert (scores["1"][2], scores["0"][2]) == (True, False)


def test_failing_command_kills_the_prestarted_child(random_weights, tmp_path):
    """A bad input ends the command at once (rc 2): the child importing torch is killed, not awaited."""
    tag, env = tagged_env()
    t = time.perf_counter()
    out = run_cli(
        ["score", "--image", tmp_path / "missing.nii.gz", "--mask", tmp_path / "m.nii.gz", "--weights", random_weights],
        env,
    )
    assert out.returncode == 2 and "File not found" in out.stderr
    assert wait_until_gone(tag, seconds=2.0) == []
    assert time.perf_counter() - t < 30


def test_help_starts_no_child():
    encoder_process.prestart(["score", "--help"])
    assert encoder_process._prestarted is None
    encoder_process.prestart(["weights", "status"])
    assert encoder_process._prestarted is None


def test_prestart_is_adopted_or_discarded(random_weights, monkeypatch):
    monkeypatch.setattr(encoder_process, "_torch_loaded", lambda: False)  # as in a fresh `python -m DFM50NLib`
    encoder_process.prestart(["score", "--image", "a"])
    child = encoder_process._prestarted
    assert child is not None and child.poll() is None
    with EncoderProcess(random_weights) as remote:
        assert remote._proc is child and encoder_process._prestarted is None  # adopted
        remote.ready()
    encoder_process.prestart(["demo"])
    other = encoder_process._prestarted
    encoder_process.discard_prestarted()
    assert other.poll() is not None and encoder_process._prestarted is None


def test_killed_parent_leaves_no_child(random_weights, tmp_path):
    """SIGKILL of the command: the child sees its input end and exits by itself."""
    tag, env = tagged_env()
    code = (
        "import sys, time; from DFM50NLib.model.encoder_process import EncoderProcess; "
        "e = EncoderProcess(sys.argv[1]); e.ready(); print('ready', flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(random_weights)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert parent.stdout.readline().strip() == "ready"
    assert len(processes_with(tag)) == 2
    parent.kill()
    parent.wait()
    assert wait_until_gone(tag, seconds=10.0) == []


def test_no_process_possible_means_loading_in_this_one(random_weights, monkeypatch):
    """No Python executable to start (embedded interpreters), or the start fails: the command loads FCIB in its
    own process (one_shot_encoder yields None when nothing is cached) instead of failing."""
    monkeypatch.setattr(encoder_process, "_torch_loaded", lambda: False)
    monkeypatch.setattr(fcib, "cached_encoder", lambda *a: None)

    def refuse():
        raise OSError("no fork for you")

    monkeypatch.setattr(encoder_process, "_spawn", refuse)
    encoder_process.prestart(["score"])
    assert encoder_process._prestarted is None
    with encoder_process.one_shot_encoder(random_weights) as enc:
        assert enc is None
    monkeypatch.setattr(sys, "executable", "")
    assert not encoder_process.use_process()


def test_kill_ends_the_child_and_what_it_started_at_once(random_weights):
    """Cancel's kill(): the model process is reaped well within a second, later calls fail clearly; and a child
    that started processes of its own (here a shell with a `sleep`, in a session of its own as _spawn makes
    them) loses them too."""
    with EncoderProcess(random_weights) as remote:
        remote.ready()
        busy = remote.features_call(cubes(8))
        t = time.perf_counter()
        remote.kill()
        while not remote.gone() and time.perf_counter() - t < 5:
            time.sleep(0.001)
        assert time.perf_counter() - t < 1.0
        remote.poll()
        with pytest.raises(DFM50NError, match="stopped"):
            busy.result()
        with pytest.raises(DFM50NError, match="stopped"):
            remote.features(cubes(1))
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )
    grandchild = int(shell.stdout.readline())
    service = encoder_process.ServiceProcess(shell)
    service.kill()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            state = (Path(f"/proc/{grandchild}") / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:  # reaped already: gone, as wanted
            break
        if state == "Z":
            break
        time.sleep(0.005)
    while not service.gone() and time.monotonic() < deadline:  # the shell itself, reaped by the same kill
        time.sleep(0.005)
    assert time.monotonic() < deadline and service.gone()
    service.close()


def test_inside_slicer_the_child_is_pythonslicer(tmp_path, monkeypatch):
    """In Slicer sys.executable is the Slicer application: the child runs `PythonSlicer` from PATH."""
    import types

    assert encoder_process.child_python() == sys.executable  # plain Python (and slicer-core: no slicer.app)
    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=object()))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DFM50NError, match="PythonSlicer, Slicer's Python interpreter, was found neither"):
        encoder_process.child_python()
    exe = tmp_path / "PythonSlicer"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert encoder_process.child_python() == str(exe)


def test_requests_are_answered_in_order_without_blocking_the_caller(random_weights):
    """The polled use (Slicer's main thread): poll() returns at once whatever has arrived; calls queued behind
    one another get their own answers."""
    x = cubes(2)
    with EncoderProcess(random_weights) as remote:
        t = time.perf_counter()
        remote.poll()
        assert time.perf_counter() - t < 0.05 and not remote.loaded  # still importing torch
        remote.ready()
        first, second = remote.features_call(x[0]), remote.sha256_call()
        while not (first.done and second.done):
            remote.poll()
            time.sleep(0.01)
        assert np.array_equal(first.result(), remote.features(x[0])) and second.result() == remote.weights_sha256
        assert remote.idle and remote.alive()


def test_the_shared_process_is_reused_warm_and_replaced_after_a_failed_load_or_a_kill(random_weights, tmp_path):
    """shared_encoder: the same warm process for the same file and device; a new one after its load failed
    (e.g. PyTorch installed since), after a kill (Cancel), or for another file."""
    bad = tmp_path / "model_weights.torch"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    encoder_process.close_shared()
    try:
        broken = encoder_process.shared_encoder(bad)
        with pytest.raises(WeightsError):
            broken.ready()
        assert encoder_process.shared_encoder(bad) is not broken and broken.gone()
        warm = encoder_process.shared_encoder(random_weights)
        warm.ready()
        assert encoder_process.shared_encoder(random_weights) is warm and warm.alive()
        warm.kill()
        again = encoder_process.shared_encoder(random_weights)
        assert again is not warm and again.pid != warm.pid and again.ready()["model_load"] > 0
    finally:
        encoder_process.close_shared()
