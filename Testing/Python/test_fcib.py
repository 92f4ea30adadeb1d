"""FCIB encoder: strict loading (each bad file gets its own message), input normalisation, features, cache.

Bad checkpoints are built cheaply: every tensor is a stride-0 view of one element (`expand`), so a file
with all 322 entries of the right shapes takes ~100 KB, not 738 MB; the full-size random checkpoint
(`random_weights`) is used where the real weights matter.
"""

from __future__ import annotations

import datetime
import os
import shutil

import numpy as np
import pytest
import torch

from DFM50NLib.constants import FCIB_PARAMETER_COUNT, FCIB_STATE_DICT_ENTRIES, N_FCIB_FEATURES
from DFM50NLib.errors import DFM50NError, InputError, WeightsError
from DFM50NLib.model import fcib


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Hash records go to a temporary cache, not the user's."""
    monkeypatch.setenv("DFM50N_CACHE_DIR", str(tmp_path / "cache"))


def tiny_state():
    """Every key of the trunk with the right shape and dtype, each a view of a single element."""
    spec = dict(fcib.build_trunk("meta").state_dict().items())
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in spec.items()}


def save(obj, path, **kw):
    torch.save(obj, path, **kw)
    return path


def load_error(path) -> str:
    with pytest.raises(WeightsError) as info:
        fcib.load_trunk_state(path)
    return str(info.value)


def cubes(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(-400.0, 350.0, size=(n, 50, 50, 50)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- strict loading


def test_real_format_checkpoint_loads_strictly(random_weights):
    state = fcib.load_trunk_state(random_weights)
    assert len(state) == FCIB_STATE_DICT_ENTRIES == 322
    trunk = fcib.build_trunk("meta")
    params = {k for k, _ in trunk.named_parameters()}
    assert sum(state[k].numel() for k in params) == FCIB_PARAMETER_COUNT == 184_477_824
    # the loaded model holds exactly the file's tensors (seed-0 random init, not re-initialised)
    model = fcib.load_trunk(random_weights)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    plain = torch.load(random_weights, map_location="cpu", weights_only=True, mmap=True)["trunk_state_dict"]
    got = model.state_dict()
    for k in ("conv1.weight", "layer4.2.bn3.running_var", "layer2.0.downsample.0.bias"):
        assert torch.equal(got[k], plain[k])


def test_tiny_control_file_passes(tmp_path):
    """The cheap variants below differ from a *passing* file only by their one defect."""
    assert len(fcib.load_trunk_state(save({"trunk_state_dict": tiny_state()}, tmp_path / "ok.torch"))) == 322
    legacy = save({"trunk_state_dict": tiny_state()}, tmp_path / "legacy.torch", _use_new_zipfile_serialization=False)
    assert len(fcib.load_trunk_state(legacy)) == 322  # pre-1.6 format: loaded without mmap


def test_missing_file_says_the_three_ways(tmp_path):
    msg = load_error(tmp_path / "nope.torch")
    assert "does not exist" in msg and "--weights PATH" in msg and "DFM50N_FCIB_WEIGHTS" in msg
    assert "python -m DFM50NLib weights download" in msg and "Slicer" in msg


def test_truncated_copy(random_weights, tmp_path):
    part = tmp_path / "truncated.torch"
    with open(random_weights, "rb") as src, open(part, "wb") as dst:
        dst.write(src.read(10_000_000))
    msg = load_error(part)
    assert "truncated or corrupt (10,000,000 bytes" in msg and "download again" in msg


def test_empty_and_non_torch_files(tmp_path):
    (tmp_path / "empty.torch").write_bytes(b"")
    assert "is empty (0 bytes)" in load_error(tmp_path / "empty.torch")
    html = tmp_path / "page.torch"
    html.write_text("<!DOCTYPE html><html><body>Zenodo is down</body></html>")
    msg = load_error(html)
    assert "is not a PyTorch checkpoint" in msg and "b'<!DO'" in msg
    (tmp_path / "folder.torch").mkdir()
    assert "is a folder" in load_error(tmp_path / "folder.torch")


def test_bare_state_dict(tmp_path):
    msg = load_error(save(tiny_state(), tmp_path / "bare.torch"))
    assert "looks like a bare state dict (322 tensors" in msg and "{'trunk_state_dict': <state dict>}" in msg


def test_not_a_dict_and_other_dict(tmp_path):
    assert "holds a list, not a dict" in load_error(save([torch.zeros(2)], tmp_path / "list.torch"))
    msg = load_error(save({"state_dict": tiny_state(), "epoch": 3}, tmp_path / "other.torch"))
    assert "has no 'trunk_state_dict'" in msg and "epoch, state_dict" in msg


def test_arbitrary_python_objects_are_refused(tmp_path):
    ckpt = {"trunk_state_dict": tiny_state(), "saved": datetime.datetime(2024, 1, 1)}
    assert "Python objects other than tensors" in load_error(save(ckpt, tmp_path / "obj.torch"))


def test_one_key_removed(tmp_path):
    state = tiny_state()
    del state["layer3.1.bn2.running_mean"]
    msg = load_error(save({"trunk_state_dict": state}, tmp_path / "missing.torch"))
    assert "1 missing key(s): layer3.1.bn2.running_mean" in msg
    assert "unexpected" not in msg and "mismatch" not in msg


def test_one_shape_changed(tmp_path):
    state = tiny_state()
    state["conv1.weight"] = torch.zeros(()).expand(128, 1, 3, 7, 7)
    msg = load_error(save({"trunk_state_dict": state}, tmp_path / "shape.torch"))
    assert (
        "1 shape/dtype mismatch(es): conv1.weight (128, 1, 3, 7, 7) float32 (expected (128, 1, 7, 7, 7) float32)" in msg
    )


def test_one_dtype_changed(tmp_path):
    state = tiny_state()
    state["bn1.weight"] = torch.zeros((), dtype=torch.float16).expand(128)
    assert "float16 (expected (128,) float32)" in load_error(save({"trunk_state_dict": state}, tmp_path / "dt.torch"))


def test_extra_key(tmp_path):
    state = tiny_state()
    state["fc.weight"] = torch.zeros(2, 4096)
    msg = load_error(save({"trunk_state_dict": state}, tmp_path / "extra.torch"))
    assert "1 unexpected key(s): fc.weight" in msg and "missing" not in msg


def test_many_problems_are_summarised(tmp_path):
    state = {k: v for i, v in enumerate(tiny_state().values()) for k in [f"module.{i}"]}
    msg = load_error(save({"trunk_state_dict": state}, tmp_path / "prefixed.torch"))
    assert "322 missing key(s)" in msg and "and 317 more" in msg and "322 unexpected key(s)" in msg


# ---------------------------------------------------------------------------------------------- normalisation


def test_normalize_is_bit_equal_to_fcib_monai_transform():
    from monai.transforms import NormalizeIntensityd

    rng = np.random.default_rng(3)
    hu = rng.uniform(-3000, 5000, size=(50, 50, 50)).astype(np.float32)
    hu.flat[:6] = [-1024.0, 0.0, 2048.0, -1e6, 3.0e7, 1e-7]  # no clipping, exact zero at air
    ref = NormalizeIntensityd(keys=["image_path"], subtrahend=-1024, divisor=3072)({"image_path": hu[None]})
    ref = np.asarray(ref["image_path"])[0]
    got = fcib.normalize(hu)
    assert got.dtype == np.float32 and np.array_equal(got, ref)
    assert got.flat[0] == 0.0 and got.flat[2] == np.float32(1.0)
    assert not np.array_equal(got, (hu + np.float32(1024)) * np.float32(1 / 3072))  # division != multiplication


def test_normalize_casts_like_fcib_loader():
    hu = np.array([[-1000, 40, 1200]], dtype=np.int16)
    expected = (hu.astype(np.float32) + np.float32(1024)) / np.float32(3072)
    assert np.array_equal(fcib.normalize(hu), expected)
    assert np.array_equal(fcib.normalize(hu.astype(np.float64) + 0.1), fcib.normalize(np.float32(hu + 0.1)))


# ---------------------------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def encoder(random_weights, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFM50N_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        fcib.clear_encoder_cache()
        enc = fcib.get_encoder(random_weights)
        enc.weights_sha256  # let the background hash finish while the temporary cache is set
    return enc


def test_features_shape_determinism_and_batching(encoder):
    x = cubes(3)
    f0 = encoder.features(x[0])
    assert f0.shape == (1, N_FCIB_FEATURES) and f0.dtype == np.float32 and np.isfinite(f0).all()
    assert np.array_equal(encoder.features(x[0]), f0)  # deterministic
    batch = encoder.features(x, batch_size=2)  # internal batches of 2 + 1
    one_by_one = np.concatenate([f0] + [encoder.features(c) for c in x[1:]])
    assert batch.shape == (3, N_FCIB_FEATURES)
    scale = np.abs(one_by_one).max()
    # same maths, other kernel blocking: float32 rounding only. Eval mode: train-mode BatchNorm would mix the
    # cubes of a batch and differ by O(scale).
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-5 * scale)
    assert not np.allclose(batch[0], batch[1], atol=1e-3 * scale)  # different cubes, different features


def test_features_against_plainly_loaded_trunk(encoder, random_weights):
    """Independent path: normal build + torch.load copy + monai's normalisation -> same features."""
    from monai.transforms import NormalizeIntensity

    trunk = fcib.build_trunk("meta").to_empty(device="cpu").eval()  # fresh memory, filled by copying
    trunk.load_state_dict(torch.load(random_weights, map_location="cpu", weights_only=True)["trunk_state_dict"])
    x = cubes(1, seed=5)[0]
    inp = np.asarray(NormalizeIntensity(subtrahend=-1024, divisor=3072)(x[None]))
    with torch.no_grad():
        ref = trunk(torch.from_numpy(inp)[None]).numpy()
    del trunk
    np.testing.assert_allclose(encoder.features(x), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_input_validation(encoder):
    with pytest.raises(InputError, match=r"got shape \(50, 50, 49\)"):
        encoder.features(np.zeros((50, 50, 49)))
    with pytest.raises(InputError, match=r"got shape \(2, 1, 50, 50, 50\)"):
        encoder.features(np.zeros((2, 1, 50, 50, 50)))
    bad = np.zeros((2, 50, 50, 50), dtype=np.float32)
    bad[1, 3, 4, 5] = np.nan
    with pytest.raises(InputError, match=r"cube\(s\) \[1\] contain 1 NaN"):
        encoder.features(bad)
    with pytest.raises(InputError, match="real numbers"):
        encoder.features(np.zeros((50, 50, 50), dtype=complex))
    assert encoder.features(np.zeros((0, 50, 50, 50))).shape == (0, N_FCIB_FEATURES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when no GPU is present")
def test_cuda_requested_but_unavailable(random_weights):
    with pytest.raises(DFM50NError, match="sees no CUDA GPU"):
        fcib.get_encoder(random_weights, device="cuda")
    with pytest.raises(DFM50NError, match="unknown device"):
        fcib.get_encoder(random_weights, device="gpu0")


@pytest.fixture
def backend_flags_restored():
    """The process-wide cuDNN / matmul switches as they were before the test."""
    b = torch.backends
    saved = (b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark)
    yield
    b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = saved


def _flags():
    b = torch.backends
    return {
        "cudnn.allow_tf32": b.cudnn.allow_tf32,
        "matmul.allow_tf32": b.cuda.matmul.allow_tf32,
        "cudnn.deterministic": b.cudnn.deterministic,
        "cudnn.benchmark": b.cudnn.benchmark,
    }


FULL_FP32 = {
    "cudnn.allow_tf32": False,
    "matmul.allow_tf32": False,
    "cudnn.deterministic": True,
    "cudnn.benchmark": False,
}


def test_a_cuda_encoder_forwards_in_full_fp32_with_deterministic_cudnn(backend_flags_restored):
    """What a CUDA encoder sets (at build and before each forward), checked on the flags: runs without a GPU."""
    b = torch.backends
    # what PyTorch's defaults plus a speed-minded library leave behind
    b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.deterministic, b.cudnn.benchmark = True, True, False, True
    fcib.use_full_fp32("cpu")
    assert _flags() == {k: not v for k, v in FULL_FP32.items()}  # a CPU encoder leaves the process alone
    for device in ("cuda", "cuda:1"):
        b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32, b.cudnn.benchmark = True, True, True
        fcib.use_full_fp32(device)
        assert _flags() == FULL_FP32, device
        assert torch.get_float32_matmul_precision() == "highest"
        if hasattr(b.cudnn, "conv"):  # torch >= 2.9's per-operator switches agree (no TF32 left anywhere)
            assert b.cudnn.conv.fp32_precision != "tf32" and b.cuda.matmul.fp32_precision == "ieee"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(encoder, random_weights, backend_flags_restored):
    """Full FP32 on the GPU: features within 1e-4 of the CPU's, same risk class, flags set by the build."""
    from DFM50NLib.model.classifier import load_classifier

    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: the encoder must turn it off itself
    fcib.clear_encoder_cache()
    gpu = fcib.get_encoder(random_weights, device="cuda")
    assert _flags() == FULL_FP32
    x = cubes(8, seed=7)
    ref = encoder.features(x)
    torch.backends.cudnn.allow_tf32 = True  # switched back on by someone else: the forward sets it again
    got = gpu.features(x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert np.array_equal(gpu.features(x), got)  # deterministic cuDNN: the same bits again
    clf = load_classifier()
    cpu_scores, gpu_scores = clf.predict_from_4096(ref), clf.predict_from_4096(got)
    assert list(gpu_scores >= clf.threshold) == list(cpu_scores >= clf.threshold)
    np.testing.assert_allclose(gpu_scores, cpu_scores, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------- cache


def test_get_encoder_is_cached_per_file_and_device(tmp_path):
    path = save({"trunk_state_dict": tiny_state()}, tmp_path / "tiny.torch")
    fcib.clear_encoder_cache()
    a = fcib.get_encoder(path)
    assert fcib.get_encoder(str(path)) is a
    link = tmp_path / "link.torch"
    try:
        link.symlink_to(path)
        assert fcib.get_encoder(link) is a  # keyed by the resolved path
    except OSError:
        pass
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "replaced" file -> new encoder
    b = fcib.get_encoder(path)
    assert b is not a and fcib.get_encoder(path) is b
    fcib.clear_encoder_cache()
    assert fcib.get_encoder(path) is not b
    fcib.clear_encoder_cache()


def test_get_encoder_threads_build_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = save({"trunk_state_dict": tiny_state()}, tmp_path / "tiny.torch")
    fcib.clear_encoder_cache()
    with ThreadPoolExecutor(4) as pool:
        encs = list(pool.map(lambda _: fcib.get_encoder(path), range(8)))
    assert all(e is encs[0] for e in encs)
    fcib.clear_encoder_cache()


def test_get_encoder_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*3 ways"):
        fcib.get_encoder(tmp_path / "absent.torch")


def test_weights_sha256_is_the_file_hash(tmp_path):
    import hashlib

    path = save({"trunk_state_dict": tiny_state()}, tmp_path / "tiny.torch")
    enc = fcib.FCIBEncoder(path)
    assert enc.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    copy = shutil.copy(path, tmp_path / "copy.torch")
    assert fcib.FCIBEncoder(copy, verify=False).weights_sha256 == enc.weights_sha256
