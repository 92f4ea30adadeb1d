"""Where the web app may read case files from, and where uploads go.

Safe by construction: uploads are size-limited and written into a private (0700) temporary folder owned by the
server; a server path is reachable only as a name *under* `--data` (resolved, symlinks included, and checked to
stay inside). Nothing else on the server can be named from the page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from DFM50NLib.errors import InputError

DEFAULT_MAX_UPLOAD_MB = 1024
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd", ".zip")


def has_volume_suffix(name: str) -> bool:
    return name.lower().endswith(VOLUME_SUFFIXES)


class DataFolder:
    """The files a user may open from the server: those under `root`, listed by relative name."""

    def __init__(self, root=None):
        self.root = Path(root).resolve() if root else None
        if self.root is not None and not self.root.is_dir():
            raise InputError(f"--data {root}: not a folder. Give the folder that holds the CT files.")

    def list(self, limit=500) -> list:
        if self.root is None:
            return []
        names = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if has_volume_suffix(f):
                    names.append((Path(dirpath) / f).relative_to(self.root).as_posix())
                    if len(names) >= limit:
                        return names
        return names

    def resolve(self, name: str) -> Path:
        """The file `name` under the data folder; refuses anything that leaves it (.., absolute, symlinks)."""
        if self.root is None:
            raise InputError("No --data folder was given to the server: open the demo case or upload a file.")
        path = (self.root / str(name)).resolve()
        if path != self.root and self.root not in path.parents:
            raise InputError(f"{name}: not inside the server's data folder.")
        if not path.is_file():
            raise InputError(f"{name}: no such file in the server's data folder.")
        return path


class UploadFolder:
    """A private temporary folder for uploaded files (deleted with the server); enforces the size limit."""

    def __init__(self, max_mb=DEFAULT_MAX_UPLOAD_MB):
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.path = Path(tempfile.mkdtemp(prefix="dfm50n-web-"))
        os.chmod(self.path, 0o700)
        self._n = 0

    def check_size(self, nbytes: int):
        if nbytes > self.max_bytes:
            raise InputError(
                f"Upload of {nbytes / 1e6:.0f} MB is over the server's limit of {self.max_bytes / 1e6:.0f} MB "
                "(start the server with a larger --max-upload-mb, or put the file under --data)."
            )

    def save(self, name: str, content: bytes) -> Path:
        """Write one uploaded file into a fresh sub-folder; a .zip (DICOM series) is unpacked safely."""
        self.check_size(len(content))
        self._n += 1
        sub = self.path / f"upload{self._n}"
        sub.mkdir(mode=0o700)
        safe = Path(str(name).replace("\\", "/")).name or "upload"
        target = sub / safe
        target.write_bytes(content)
        if safe.lower().endswith(".zip"):
            return self._unzip(target, sub / "series")
        if not has_volume_suffix(safe):
            raise InputError(f"{safe}: give a NIfTI (.nii/.nii.gz), NRRD (.nrrd) or a zipped DICOM series (.zip).")
        return target

    def _unzip(self, archive: Path, dest: Path) -> Path:
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile:
            raise InputError(f"{archive.name}: not a readable zip file.")
        with zf:
            total = sum(i.file_size for i in zf.infolist())
            if total > 4 * self.max_bytes:
                raise InputError(f"{archive.name}: unpacks to {total / 1e6:.0f} MB, over the server's limit.")
            dest.mkdir(mode=0o700)
            for info in zf.infolist():  # flatten: member names never choose a server path
                if info.is_dir():
                    continue
                out = dest / f"{len(list(dest.iterdir())):05d}_{Path(info.filename).name}"
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        archive.unlink()
        if not any(dest.iterdir()):
            raise InputError(f"{archive.name}: the zip is empty; zip the folder of one DICOM series.")
        return dest

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)
