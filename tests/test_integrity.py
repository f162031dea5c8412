"""A truncated or altered prepared array, learner state, encoder or text-model state stops its reader with
one line naming the file and the stage to rerun (`dvc repro -f ...`), checked against the sha256 kept
beside it. Positive controls: without the check, plain numpy/torch read the same files with a raw
traceback, or accept the altered numbers silently."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dualmem.core import paths
from dualmem.core.errors import DataError
from dualmem.core.integrity import digest_path
from dualmem.data.prepared import load_dataset, prepared_file, save_dataset
from dualmem.data.sources import Dataset
from dualmem.encoders import EncoderParams, load_encoder, new_encoder, save_encoder
from dualmem.lm import pipeline
from dualmem.runner import load_learner_state, read_state, save_state
from dualmem.tiny import project_root

from .test_bad_input import assert_one_line_error

STAGES = project_root() / "stages"
MARKER = 100.0  # a weight value whose float32 bytes are found, and flipped, inside a saved state


class StubLearner:
    """What save_state/load_learner_state use of a learner: its name, state and memory cost."""

    name = "finetune"

    def __init__(self) -> None:
        self.weights = torch.arange(256, dtype=torch.float32)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"].clone()

    def memory_cost(self) -> dict[str, int]:
        return {"params": 256}


def small_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset("digits", rng.integers(0, 17, (60, 64), dtype=np.uint8), np.arange(60) % 10,
                   rng.integers(0, 17, (20, 64), dtype=np.uint8), np.arange(20) % 10, 1 / 16, (8, 8))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path, offset: int | None = None) -> None:
    """One byte changed in place; the file keeps its length."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def flip_marker_weight(path: Path) -> None:
    """Change the stored float MARKER (uncompressed in torch's format) to another valid float."""
    offset = path.read_bytes().find(np.float32(MARKER).tobytes())
    assert offset >= 0
    flip_byte(path, offset + 3)


def one_line(error: pytest.ExceptionInfo[DataError], *fragments: str) -> str:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert "fix:" in message
    return message


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so the project's relative paths (data/prepared, models/...) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def prepared(in_tmp) -> Path:
    path = prepared_file("main")
    save_dataset(small_dataset(), path)
    return path


def test_an_intact_prepared_array_round_trips_with_its_digest_beside_it(prepared):
    back = load_dataset(prepared)
    original = small_dataset()
    assert np.array_equal(back.x_train, original.x_train) and np.array_equal(back.y_test, original.y_test)
    assert (back.name, back.scale, back.image_shape) == (original.name, original.scale, original.image_shape)
    digest = digest_path(prepared)
    assert digest.parent == paths.PREPARED_DIR  # inside the `prepare` stage's DVC output
    assert digest.read_text() == f"{hashlib.sha256(prepared.read_bytes()).hexdigest()}  main.npz\n"
    assert sorted(p.name for p in paths.PREPARED_DIR.iterdir()) == ["main.npz", "main.npz.sha256"]


def test_writing_the_same_arrays_twice_gives_byte_identical_files(prepared):
    first = (prepared.read_bytes(), digest_path(prepared).read_bytes())
    save_dataset(small_dataset(), prepared)
    assert (prepared.read_bytes(), digest_path(prepared).read_bytes()) == first


def test_a_truncated_prepared_array_names_the_file_and_the_stage(prepared):
    truncate(prepared)
    with pytest.raises(zipfile.BadZipFile):  # control: plain numpy, a raw traceback
        np.load(prepared)
    with pytest.raises(DataError) as error:
        load_dataset(prepared)
    one_line(error, "data/prepared/main.npz is corrupt", "truncated or altered", "dvc repro -f prepare")


def test_one_altered_byte_of_a_prepared_array_is_caught(prepared):
    size = prepared.stat().st_size
    flip_byte(prepared)
    assert prepared.stat().st_size == size
    with pytest.raises(DataError) as error:
        load_dataset(prepared)
    one_line(error, "data/prepared/main.npz is corrupt", "dvc repro -f prepare")


def test_altered_numbers_in_a_valid_npz_load_silently_without_the_check(prepared):
    """An npz rewritten with one label changed is a valid file: plain numpy accepts it; the digest does not."""
    with np.load(prepared) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["y_train"][0] = 9
    with prepared.open("wb") as out:
        np.savez_compressed(out, **arrays)
    with np.load(prepared) as npz:
        assert npz["y_train"][0] == 9 != small_dataset().y_train[0]  # control: silently accepted
    with pytest.raises(DataError) as error:
        load_dataset(prepared)
    one_line(error, "data/prepared/main.npz is corrupt")


def test_a_prepared_array_without_its_digest_is_refused(prepared):
    digest_path(prepared).unlink()
    with pytest.raises(DataError) as error:
        load_dataset(prepared)
    one_line(error, "data/prepared/main.npz has no sha256 digest", "main.npz.sha256", "dvc repro -f prepare")


def test_a_malformed_digest_is_refused(prepared):
    digest_path(prepared).write_text("not a digest\n")
    with pytest.raises(DataError) as error:
        load_dataset(prepared)
    one_line(error, "main.npz.sha256", "malformed", "dvc repro -f prepare")


@pytest.fixture
def wake_state(in_tmp) -> Path:
    path = paths.wake_state_path("continual", "finetune", 0, 1)
    save_state(StubLearner(), path)
    return path


def test_an_intact_learner_state_round_trips(wake_state):
    learner = StubLearner()
    learner.weights.zero_()
    assert load_learner_state(learner, wake_state) == {"params": 256}
    assert torch.equal(learner.weights, StubLearner().weights)
    assert digest_path(wake_state).exists() and digest_path(wake_state).parent == wake_state.parent


def test_a_truncated_learner_state_names_the_file_and_its_stage(wake_state):
    truncate(wake_state)
    with pytest.raises(DataError) as error:
        read_state(wake_state)
    one_line(error, "models/continual/finetune/wake/seed_0/task_1.pt is corrupt",
             "dvc repro -f sequential@finetune-continual")


def test_an_altered_learner_state_loads_silently_without_the_check(wake_state):
    flip_marker_weight(wake_state)
    plain = torch.load(wake_state, weights_only=False)["state"]["weights"]
    assert plain[int(MARKER)] != MARKER  # control: plain torch accepts the altered weight
    learner = StubLearner()
    with pytest.raises(DataError) as error:
        load_learner_state(learner, wake_state)
    one_line(error, "task_1.pt is corrupt", "dvc repro -f sequential@finetune-continual")
    assert torch.equal(learner.weights, StubLearner().weights)  # nothing was loaded


def test_a_sleep_state_names_the_consolidate_stage(in_tmp):
    path = paths.sleep_state_path("openworld", "dualmem", 2, 0)
    save_state(StubLearner(), path)
    flip_marker_weight(path)
    with pytest.raises(DataError) as error:
        read_state(path)
    one_line(error, str(path), "dvc repro -f consolidate@dualmem-openworld")


def test_an_altered_encoder_checkpoint_names_train_encoder(in_tmp):
    path = paths.encoder_path("continual", 0)
    cfg = EncoderParams(hidden=[8], mode="random", epochs=1, lr=0.001, batch_size=8)
    encoder = new_encoder(4, cfg.hidden, "continual", 0)
    save_encoder(encoder, [0, 1], cfg, path)
    back, fitted = load_encoder(path)
    assert fitted == [0, 1] and all(torch.equal(a, b) for a, b in zip(back.state_dict().values(),
                                                                      encoder.state_dict().values(), strict=True))
    flip_byte(path)
    with pytest.raises(DataError) as error:
        load_encoder(path)
    one_line(error, "models/continual/encoder/seed_0.pt is corrupt", "dvc repro -f train_encoder@continual")


@pytest.mark.parametrize(("path", "stage"), [
    (pipeline.base_path(0), "lm_train_base"),
    (pipeline.state_path("finetune", "wake", 0, 1), "lm_sequential@finetune"),
    (pipeline.state_path("dualmem", "sleep", 1, 2), "lm_consolidate@dualmem"),
])
def test_an_altered_text_model_state_names_its_lm_stage(in_tmp, path, stage):
    pipeline.save({"state": StubLearner().state_dict(), "memory": {}}, path)
    assert torch.equal(pipeline.load(path)["state"]["weights"], StubLearner().weights)
    flip_marker_weight(path)
    with pytest.raises(DataError) as error:
        pipeline.load(path)
    one_line(error, f"{path} is corrupt", f"dvc repro -f {stage}")


def test_a_stage_meeting_an_altered_prepared_array_fails_in_one_line(tmp_path, tiny_params):
    """A real process: `train_encoder` on a prepared array altered after `prepare` wrote it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    save_dataset(small_dataset(), tmp_path / prepared_file("main"))
    flip_byte(tmp_path / prepared_file("main"))
    result = subprocess.run([sys.executable, str(STAGES / "train_encoder.py"), "--stream", "continual"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert_one_line_error(result, "data/prepared/main.npz is corrupt", "dvc repro -f prepare")
    assert not (tmp_path / "models").exists()


def test_a_stage_reading_an_altered_learner_state_fails_in_one_line(tmp_path, tiny_params, monkeypatch):
    """A real process: a stage (the stage contract of dualmem.core.cli.run_stage) reading an altered wake state."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    state = paths.wake_state_path("continual", "finetune", 0, 0)
    save_state(StubLearner(), state)
    flip_marker_weight(state)
    script = ("from pathlib import Path\nfrom dualmem.core.cli import run_stage\n"
              "from dualmem.runner import read_state\n"
              f"run_stage(lambda params, args: read_state(Path({str(state)!r})), lambda args: [], "
              "stage='consolidate@finetune-continual')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180)
    assert_one_line_error(result, f"{state} is corrupt", "dvc repro -f sequential@finetune-continual")

