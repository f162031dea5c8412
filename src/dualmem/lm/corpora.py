"""Test 6's text domains, offline and pinned: where each comes from, how its text is extracted, and the
fixed train / validation / test slices cut from it.

| domain | source (installed by `make corpora`) | text |
|---|---|---|
| prose | Debian `jargon-text` 4.4.7-4.1: /usr/share/doc/jargon-text/jargon.txt.gz | the Jargon File, as is |
| legal | PyPI wheel `licensedcode-data==32.1.0` | every `licensedcode/data/licenses/*.LICENSE`, YAML header cut |
| medical | PyPI wheel `simple-icd-10-cm==1.5.0` | the ICD-10-CM tabular XML's text, tags removed |
| code | PyPI wheel `pip==24.0` | every `pip/**/*.py` |

Every wheel is checked against its pinned sha256 before it is read, and every extracted text against the
sha256 recorded here (Debian drops superseded revisions, so the extraction itself is pinned). Slices:
the text is cut into `CHUNK`-byte chunks, shuffled once with a fixed seed (the same for every run), and
dealt to test, validation and train in that order — three disjoint sets of whole chunks.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualmem.core.errors import DataError, ParamsError
from dualmem.core.params import Section

CHUNK = 2048
SLICES = ("train", "validation", "test")
SHUFFLE_SEED = 20261130


@dataclass(frozen=True)
class Source:
    package: str  # what to install, as the error message says it
    path: str  # a wheel's file name (under lm.sources_dir) or an absolute path (a Debian file)
    sha256: str  # of that file ("" for a Debian file: only its extracted text is pinned)
    text_sha256: str  # of the text extracted from it (Debian drops superseded revisions)
    extract: Callable[[Path], bytes]


def jargon(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def licences(path: Path) -> bytes:
    with zipfile.ZipFile(path) as wheel:
        names = sorted(n for n in wheel.namelist() if re.fullmatch(r"licensedcode/data/licenses/[^/]+\.LICENSE", n))
        texts = [strip_yaml_header(wheel.read(n).decode("utf-8")) for n in names]
    return "\n\n".join(t.strip() for t in texts if t.strip()).encode("utf-8")


def strip_yaml_header(text: str) -> str:
    """A .LICENSE file is `---\\n<yaml>\\n---\\n<licence text>`: the text after the second `---` line."""
    parts = re.split(r"^---\s*$", text, maxsplit=2, flags=re.MULTILINE)
    return parts[2] if len(parts) == 3 and not parts[0].strip() else text


def icd10(path: Path) -> bytes:
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if re.fullmatch(r"simple_icd_10_cm/data/icd10c-tabular-.*\.xml", n))
        xml = wheel.read(name).decode("utf-8")
    lines = (line.strip() for line in re.sub(r"<[^>]+>", "\n", xml).splitlines())
    return "\n".join(line for line in lines if line).encode("utf-8")


def python_sources(path: Path) -> bytes:
    with zipfile.ZipFile(path) as wheel:
        names = sorted(n for n in wheel.namelist() if n.startswith("pip/") and n.endswith(".py"))
        return b"\n\n".join(wheel.read(n) for n in names)


SOURCES: dict[str, Source] = {
    "prose": Source("apt-get install jargon-text", "/usr/share/doc/jargon-text/jargon.txt.gz", "",
                    "40dfb4b98191a670a09a183d5798d50f243d23fdbd1495dcc0aca2ce5895ba97", jargon),
    "legal": Source("make corpora (pip download licensedcode-data==32.1.0)",
                    "licensedcode_data-32.1.0-py3-none-any.whl",
                    "18f60bde6dbabbc0a925d45ed80089cdbb7168156a2a1c118737198f9b743b96",
                    "3a7918e7c0b2bbf218e31e9f49700195abcfc230057e1c49bc229dc675f03043", licences),
    "medical": Source("make corpora (pip download simple-icd-10-cm==1.5.0)",
                      "simple_icd_10_cm-1.5.0-py3-none-any.whl",
                      "6d461d71dc26aedc530ae65f02cfb578a154e49507c32e8241e75f701d4b7e42",
                      "4a106d67ab3c2acea590b97026607eb69c38d1ea6a2326b21d3a9fd6b3fe125b", icd10),
    "code": Source("make corpora (pip download pip==24.0)", "pip-24.0-py3-none-any.whl",
                   "ba0d021a166865d2265246961bec0152ff124de910c5cc39f1156ce3fa7c69dc",
                   "77f101372a32d59c1efa4d324f6b1d39b67c5c64cc3428607ff309530582a08a", python_sources),
}


@dataclass(frozen=True)
class CorpusParams:
    sources_dir: Path
    domains: list[str]
    sizes: dict[str, int]  # bytes per slice

    @classmethod
    def from_params(cls, params: dict) -> CorpusParams:
        s = Section.of(params, "lm")
        domains = s.names("domains", list(SOURCES))
        if len(domains) < 2:
            raise ParamsError("lm.domains", f"is {domains}", "give the general domain and at least one more")
        slices = s.section("slices")
        sizes = {name: slices.integer(name, minimum=CHUNK) for name in SLICES}
        return cls(Path(s.string("sources_dir")), domains, sizes)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(domain: str, sources_dir: Path) -> bytes:
    """The domain's text, its source and text checked against their pinned sha256."""
    source = SOURCES[domain]
    path = Path(source.path) if Path(source.path).is_absolute() else sources_dir / source.path
    if not path.exists():
        raise DataError(f"text source of domain {domain!r} is missing: {path}; fix: {source.package}")
    if source.sha256 and sha256(path.read_bytes()) != source.sha256:
        raise DataError(f"{path} does not match its pinned sha256 (domain {domain!r}); fix: reinstall it "
                        f"({source.package})")
    text = source.extract(path)
    if sha256(text) != source.text_sha256:
        raise DataError(f"the text extracted from {path} changed (domain {domain!r}); fix: install the "
                        f"pinned revision ({source.package})")
    return text


def cut_slices(text: bytes, sizes: dict[str, int], domain: str) -> dict[str, np.ndarray]:
    """Disjoint train / validation / test slices of whole chunks (a fixed shuffle of the text's chunks)."""
    n_chunks = len(text) // CHUNK
    need = {name: -(-size // CHUNK) for name, size in sizes.items()}
    if sum(need.values()) > n_chunks:
        raise ParamsError("lm.slices", f"ask {sum(need.values()) * CHUNK:,} bytes of domain {domain!r}, which has "
                          f"{n_chunks * CHUNK:,}", "lower lm.slices.train (or validation, test)")
    data = np.frombuffer(text[: n_chunks * CHUNK], dtype=np.uint8).reshape(n_chunks, CHUNK)
    order = np.random.default_rng([SHUFFLE_SEED, list(SOURCES).index(domain)]).permutation(n_chunks)
    out, start = {}, 0
    for name in ("test", "validation", "train"):
        rows = order[start : start + need[name]]
        out[name] = data[np.sort(rows)].reshape(-1)[: sizes[name]].copy()
        start += need[name]
    return out


def prepare_corpora(cfg: CorpusParams, directory: Path) -> dict[str, dict[str, str | int]]:
    """data/text/<domain>.npz with the three slices; returns what was written (sizes and checksums)."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = {}
    for domain in cfg.domains:
        text = read_source(domain, cfg.sources_dir)
        slices = cut_slices(text, cfg.sizes, domain)
        tmp = directory / f"{domain}.tmp.npz"
        np.savez(tmp, **slices)
        tmp.replace(directory / f"{domain}.npz")
        summary[domain] = {"text_bytes": len(text), "text_sha256": sha256(text),
                           **{f"{name}_sha256": sha256(arr.tobytes()) for name, arr in slices.items()}}
    return summary


def load_slices(directory: Path, domain: str) -> dict[str, np.ndarray]:
    path = directory / f"{domain}.npz"
    if not path.exists():
        raise DataError(f"{path} is missing; fix: run `dvc repro lm_prepare`")
    with np.load(path) as data:
        return {name: data[name] for name in SLICES}
