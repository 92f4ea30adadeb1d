"""FCIB weights integrity: zip CRC-32 of every record, the publisher's MD5 from a record API, "unverified" marking.

A local 127.0.0.1 server (test_weights.Server) serves both the checkpoint and a Zenodo-like record JSON
(`files[].key`, `files[].checksum = "md5:<hex>"`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import torch
from test_weights import Server, _isolated  # noqa: F401  (autouse fixture: private cache, no proxies)

from DFM50NLib.errors import WeightsError
from DFM50NLib.model import fcib, published, weights, zipcheck


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A valid-structure checkpoint (~190 KB): conv1.weight holds real random numbers, the rest stride-0 views."""
    torch.manual_seed(1)
    state = {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in fcib.build_trunk("meta").state_dict().items()
    }
    state["conv1.weight"] = torch.randn(state["conv1.weight"].shape)
    path = tmp_path_factory.mktemp("ck") / "ck.torch"
    torch.save({"trunk_state_dict": state}, path)
    return path


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _record(server, tmp_path, name, checksum):
    rec = tmp_path / f"record-{name}.json"
    rec.write_text(json.dumps({"id": 1, "files": [{"key": name, "size": 1, "checksum": checksum}]}))
    server.files[f"api/{name}"] = (rec, "ok")
    return f"{server.url}/api/{name}"


def _tensor_record(path, key="conv1.weight"):
    """(offset, size) in the file of the zip record holding `key`'s data (the biggest record)."""
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        return info.header_offset + 30 + n + m, info.file_size


def _garbage_copy(src, dst, n=4096):
    data = bytearray(Path(src).read_bytes())
    off, size = _tensor_record(src)
    assert size > 2 * n
    data[off + size // 2 : off + size // 2 + n] = bytes((i * 37 + 11) % 256 for i in range(n))
    Path(dst).write_bytes(bytes(data))
    return dst


def test_download_with_published_md5_is_verified(server, ckpt, tmp_path):
    server.files["model_weights.torch"] = (ckpt, "ok")
    api = _record(server, tmp_path, "model_weights.torch", f"md5:{md5(ckpt)}")
    dest = tmp_path / "w" / "model_weights.torch"
    got = weights.download_weights(
        f"{server.url}/model_weights.torch", dest, expected_size=ckpt.stat().st_size, record_url=api
    )
    assert got == dest and published.read(dest) == md5(ckpt)
    assert json.loads(published.sidecar(dest).read_text())["source"] == api
    prov = weights.provenance(dest)
    assert prov["verified"] and prov["text"].startswith("FCIB v1.0.0 (MD5 " + md5(ckpt))
    # the encoder's first use checks CRCs and hashes; the score's provenance line says verified
    enc = fcib.FCIBEncoder(dest)
    assert enc.weights_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_wrong_published_md5_refuses_and_deletes(server, ckpt, tmp_path):
    server.files["model_weights.torch"] = (ckpt, "ok")
    api = _record(server, tmp_path, "model_weights.torch", "md5:" + "0" * 32)
    dest = tmp_path / "model_weights.torch"
    with pytest.raises(WeightsError, match=rf"has MD5 {md5(ckpt)}, but the publisher's record .* lists 0{{32}}"):
        weights.download_weights(f"{server.url}/model_weights.torch", dest, expected_size=None, record_url=api)
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_padded_random_checkpoint_of_the_right_size_is_refused_or_unverified(server, ckpt, tmp_path):
    """Issue case 2: a different (random-init) checkpoint padded to the published size passes size + structure;
    the publisher's MD5 refuses it at download, and used directly it is loudly 'unverified'."""
    padded = tmp_path / "padded.torch"
    padded.write_bytes(ckpt.read_bytes() + b"\0" * 1000)
    fcib.load_trunk_state(padded)  # structurally valid: torch accepts it
    server.files["model_weights.torch"] = (padded, "ok")
    api = _record(server, tmp_path, "model_weights.torch", f"md5:{md5(ckpt)}")  # the genuine file's MD5
    dest = tmp_path / "dl" / "model_weights.torch"
    with pytest.raises(WeightsError, match="not the published file and was deleted"):
        weights.download_weights(f"{server.url}/model_weights.torch", dest, expected_size=None, record_url=api)
    assert not dest.exists()
    fcib.FCIBEncoder(padded).weights_sha256  # used by path: scored, but ...
    prov = weights.provenance(padded)
    sha = hashlib.sha256(padded.read_bytes()).hexdigest()
    assert not prov["verified"] and prov["text"].startswith(f"FCIB weights: unverified file sha256 {sha}")


def test_unreachable_record_keeps_the_file_unverified(server, ckpt, tmp_path, capsys):
    server.files["model_weights.torch"] = (ckpt, "ok")
    dest = tmp_path / "model_weights.torch"
    weights.download_weights(
        f"{server.url}/model_weights.torch", dest, expected_size=None, record_url=f"{server.url}/api/none"
    )
    assert dest.is_file() and not published.sidecar(dest).exists()
    assert "HTTP 404" in capsys.readouterr().err
    assert weights.provenance(dest)["text"].startswith("FCIB weights: unverified file sha256")


def test_resumed_part_with_garbage_inside_tensor_data_is_refused(server, ckpt, tmp_path):
    """Issue case 1: a .part whose first bytes hold 4 KB of garbage inside tensor data, resumed to full size."""
    off, size = _tensor_record(ckpt)
    dest = tmp_path / "model_weights.torch"
    part = Path(f"{dest}.part")
    bad = _garbage_copy(ckpt, tmp_path / "bad.torch")
    cut = off + size - 100  # the kept prefix ends inside the damaged record
    part.write_bytes(bad.read_bytes()[:cut])
    server.files["model_weights.torch"] = (ckpt, "ok")
    fcib.load_trunk_state(bad)  # torch loads the damaged file without complaint
    with pytest.raises(WeightsError, match=r"was deleted: .*zip record .*data/\d+.* fails its CRC-32 check"):
        weights.download_weights(f"{server.url}/model_weights.torch", dest, expected_size=ckpt.stat().st_size)
    assert server.ranges == [f"bytes={cut}-"]  # it was a resume
    assert not dest.exists() and not part.exists()


def test_first_use_checks_crcs_once_per_file(ckpt, tmp_path):
    bad = _garbage_copy(ckpt, tmp_path / "bad.torch")
    with pytest.raises(WeightsError, match="fails its CRC-32 check"):
        fcib.FCIBEncoder(bad).weights_sha256
    with pytest.raises(WeightsError, match="fails its CRC-32 check"):
        weights.verify_weights(bad)
    good = tmp_path / "good.torch"
    good.write_bytes(ckpt.read_bytes())
    zipcheck.forget()
    weights.check_against_record(good)
    key = zipcheck.file_key(good)
    assert json.loads(zipcheck._verdict_path(key).read_text())["key"] == list(key)
    # the verdict is cached: a second check does not read the records again
    calls = []
    orig = zipcheck.check_zip_crcs
    zipcheck.check_zip_crcs = lambda p: calls.append(p) or orig(p)
    try:
        zipcheck.forget()
        zipcheck.check_zip_crcs_cached(good)
        assert calls == []
        good.write_bytes(ckpt.read_bytes())  # rewritten: new mtime -> checked again
        zipcheck.check_zip_crcs_cached(good)
        assert calls == [good]
    finally:
        zipcheck.check_zip_crcs = orig


def test_offline_download_message_names_the_alternatives(tmp_path):
    dest = tmp_path / "model_weights.torch"
    with pytest.raises(WeightsError) as err:
        weights.download_weights("http://127.0.0.1:9/model_weights.torch", dest, expected_size=None, retries=0)
    msg = str(err.value)
    assert "could not reach the download host" in msg and "nothing was downloaded" in msg
    assert "--weights PATH" in msg and "DFM50N_FCIB_WEIGHTS" in msg and "http://127.0.0.1:9/model_weights.torch" in msg
    assert ".part" not in msg and not Path(f"{dest}.part").exists()
