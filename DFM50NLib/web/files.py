"""Where the web app may read case files from, and where uploads go.

Safe by construction: uploads stream to disk with the size limit checked at every piece, into a private (0700)
temporary folder of the session (removed with it); a server path is reachable only as a name *under* `--data`
(resolved, symlinks included, and checked to stay inside). Nothing else on the server can be named from the page.
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
LESION_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".dcm")  # label maps, .seg.nrrd, SEG, RTSTRUCT
MAX_ZIP_MEMBERS = 5000  # a thin-slice chest CT series is well under 2,000 images


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
    """A private temporary folder for one session's uploads (removed when the session ends). Every upload
    streams into it piece by piece (`begin` -> `UploadStream`), so the size limit holds while the bytes arrive,
    never after a whole file sits in memory; a zip is unpacked with a cap on members and unpacked bytes."""

    def __init__(self, max_mb=DEFAULT_MAX_UPLOAD_MB, parent=None, max_zip_members=MAX_ZIP_MEMBERS):
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.max_zip_members = int(max_zip_members)
        self.path = Path(tempfile.mkdtemp(prefix="dfm50n-web-", dir=parent))
        os.chmod(self.path, 0o700)
        self._n = 0

    def check_size(self, nbytes: int):
        if nbytes > self.max_bytes:
            raise InputError(
                f"Upload of {nbytes / 1e6:.0f} MB is over the server's limit of {self.max_bytes / 1e6:.0f} MB "
                "(start the server with a larger --max-upload-mb, or put the file under --data)."
            )

    def begin(self, name: str, size: int, suffixes=VOLUME_SUFFIXES) -> UploadStream:
        """A new upload of `size` bytes (as the browser declares it): refused at once when over the limit or of
        a kind this input does not take, before a byte is stored."""
        safe = Path(str(name).replace("\\", "/")).name or "upload"
        if not safe.lower().endswith(suffixes):
            raise InputError(f"{safe}: {_kinds(suffixes)}.")
        self.check_size(int(size))
        self._n += 1
        sub = self.path / f"upload{self._n}"
        sub.mkdir(mode=0o700)
        return UploadStream(self, sub / safe, int(size))

    def save(self, name: str, content: bytes, suffixes=VOLUME_SUFFIXES) -> Path:
        """A whole file at once (the same checks as a streamed one)."""
        stream = self.begin(name, len(content), suffixes)
        stream.write(0, content)
        return stream.finish()

    def _unzip(self, archive: Path, dest: Path) -> Path:
        """Unpack flat (member names never choose a server path) in one pass: at most `max_zip_members` files
        and 4x the upload limit of unpacked bytes, counted as they are written (declared sizes may lie)."""
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile:
            raise InputError(f"{archive.name}: not a readable zip file.")
        limit = 4 * self.max_bytes
        with zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) > self.max_zip_members:
                raise InputError(
                    f"{archive.name}: holds {len(members)} files, over the server's limit of "
                    f"{self.max_zip_members}; zip the folder of one DICOM series."
                )
            declared = sum(i.file_size for i in members)
            if declared > limit:
                raise InputError(
                    f"{archive.name}: unpacks to {declared / 1e6:.0f} MB, over the "
                    f"server's limit of {limit / 1e6:.0f} MB."
                )
            dest.mkdir(mode=0o700)
            written = 0
            for k, info in enumerate(members):
                out = dest / f"{k:05d}_{Path(info.filename).name}"
                with zf.open(info) as src, open(out, "wb") as dst:
                    while block := src.read(1 << 20):
                        written += len(block)
                        if written > limit:
                            raise InputError(
                                f"{archive.name}: unpacks to over {limit / 1e6:.0f} MB (more than its members "
                                "declare), over the server's limit."
                            )
                        dst.write(block)
        archive.unlink()
        if not members:
            raise InputError(f"{archive.name}: the zip is empty; zip the folder of one DICOM series.")
        return dest

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class UploadStream:
    """One file arriving in pieces, written straight to disk; the limit and the declared size are checked at
    each piece, so an oversized upload stops at the first piece past the limit."""

    def __init__(self, folder: UploadFolder, target: Path, size: int):
        self.folder, self.target, self.size = folder, target, size
        self.written = 0
        self._file = open(target, "wb")

    def write(self, offset: int, data: bytes):
        if offset != self.written:
            self.abort()
            raise InputError(
                f"{self.target.name}: a piece of the upload went missing (at byte {offset}, expected "
                f"{self.written}); upload the file again."
            )
        if self.written + len(data) > self.size:
            self.abort()
            raise InputError(f"{self.target.name}: more bytes arrived than the {self.size} announced; upload it again.")
        self.written += len(data)  # <= size, which begin() checked against the limit
        self._file.write(data)

    def finish(self) -> Path:
        """The stored file (a .zip unpacked into a folder), once every announced byte has arrived."""
        self._file.close()
        if self.written != self.size:
            self.abort()
            raise InputError(
                f"{self.target.name}: the upload stopped at {self.written} of {self.size} bytes; upload it again."
            )
        if self.target.name.lower().endswith(".zip"):
            try:
                return self.folder._unzip(self.target, self.target.parent / "series")
            except BaseException:
                self.abort()  # a refused zip leaves nothing behind
                raise
        return self.target

    def abort(self):
        self._file.close()
        shutil.rmtree(self.target.parent, ignore_errors=True)


def _kinds(suffixes) -> str:
    if ".dcm" in suffixes:
        return "give a label map (.nii/.nii.gz/.nrrd), a Slicer .seg.nrrd, or a DICOM-SEG / RTSTRUCT (.dcm)"
    return "give a NIfTI (.nii/.nii.gz), NRRD (.nrrd) or a zipped DICOM series (.zip)"
