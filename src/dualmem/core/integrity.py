"""Files written together with their sha256, and read back only while they still match it.

Beside each file `F` lies `F.sha256`, one line in `sha256sum` format (`<hex>  <name>`), so `sha256sum -c`
checks it too. It lives in the same folder as `F`, hence in the same DVC output. Writing is atomic (the file
and its digest go to temporary names first) and deterministic: the same bytes give the same two files.
A file that is truncated, altered, or has lost its digest stops the reader with a one-line DataError naming
the file and the stage to rerun.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from dualmem.core.errors import DataError

DIGEST_SUFFIX = ".sha256"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def digest_path(path: Path) -> Path:
    """Where the sha256 of `path` is kept: `<path>.sha256`, in the same folder."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rerun_fix(stage: str) -> str:
    """The fix for a corrupt output of `stage`: rerun it even though DVC thinks it is up to date."""
    return f"rerun the stage that writes it: dvc repro -f {stage}"


def _write_temporary(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    return tmp


def write_checked(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write what `write` puts into a binary stream to `path`, and its sha256 beside it."""
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = digest_path(path)
    tmp_data = _write_temporary(path, data)
    tmp_digest = _write_temporary(digest, f"{sha256_hex(data)}  {path.name}\n".encode())
    os.replace(tmp_data, path)
    os.replace(tmp_digest, digest)


def _recorded_digest(path: Path, fix: str) -> str:
    digest = digest_path(path)
    try:
        text = digest.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DataError(f"{path} has no sha256 digest ({digest} is missing: written before checksums were kept, "
                        f"or the digest was lost); fix: {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"the sha256 digest {digest} of {path} cannot be read ({exc}); fix: {fix}") from None
    recorded = text.split(maxsplit=1)[0] if text.strip() else ""
    if not _HEX_DIGEST.fullmatch(recorded):
        raise DataError(f"the sha256 digest {digest} of {path} is malformed; fix: {fix}")
    return recorded


def read_checked(path: Path, fix: str) -> io.BytesIO:
    """The bytes of `path` as a stream, once they match the sha256 recorded beside it; else a DataError
    that names the file and `fix`."""
    recorded = _recorded_digest(path, fix)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}); fix: {fix}") from None
    if sha256_hex(data) != recorded:
        raise DataError(f"{path} is corrupt (sha256 mismatch with {digest_path(path).name}: truncated or altered "
                        f"since it was written); fix: {fix}")
    return io.BytesIO(data)
