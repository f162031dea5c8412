"""Test 6's protocol: params, paths, the base model, the learners' stream and the evaluation.

- `train_base`: per seed, the byte-level model pretrained on the general domain (lm.domains[0]) only —
  shared by every learner, as in the real setting (a pretrained model, then fine-tuned).
- Stream: every learner starts from the base (`start(general)`), then meets lm.domains[1:] in order,
  `lm.finetune.steps` steps of the same batches each; its state is saved after every stage (stage 0 = the
  start, stage i = after domain i; after the sleep for learners with one).
- Evaluation: `dualmem.lm.evaluation`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dualmem.core.errors import DataError, ParamsError
from dualmem.core.integrity import read_checked, rerun_fix, write_checked
from dualmem.core.optim import adam
from dualmem.core.params import Section
from dualmem.core.seeding import derive_seed
from dualmem.lm.corpora import CorpusParams, load_slices
from dualmem.lm.model import ByteLM, ModelParams, window_losses
from dualmem.lm.text_learner import (
    Domain,
    TextContext,
    TextLearner,
    Training,
    available,
    parse_text_config,
    text_learner_class,
)

TEXT_DIR = Path("data") / "text"
LM_MODELS = Path("models") / "lm"


@dataclass(frozen=True)
class EvalParams:
    windows: int
    warmup: int


@dataclass(frozen=True)
class LMParams:
    corpus: CorpusParams
    seeds: list[int]
    learners: list[str]
    consolidate: list[str]  # the text learners with a sleep phase that get an lm_consolidate stage
    model: ModelParams
    base: Training
    finetune: Training
    memory_bytes: int
    eval: EvalParams

    @classmethod
    def from_params(cls, params: dict) -> LMParams:
        s = Section.of(params, "lm")
        model = ModelParams.from_params(params)
        e = s.section("eval")
        evaluation = EvalParams(e.integer("windows", minimum=1), e.integer("warmup", minimum=0))
        if evaluation.warmup >= model.context:
            raise ParamsError("lm.eval.warmup", f"is {evaluation.warmup}, not below the context {model.context}",
                              "use a warm-up shorter than lm.model.context")
        learners = s.names("learners", available())
        sleepers = [n for n in learners if text_learner_class(n).has_sleep]
        consolidate = s.names("consolidate", sleepers or ["(none)"], allow_empty=True)
        if missing := [n for n in sleepers if n not in consolidate]:
            raise ParamsError("lm.consolidate", f"omits {', '.join(missing)}, listed in lm.learners with a sleep phase",
                              f"list {', '.join(sleepers)}")
        out = cls(CorpusParams.from_params(params), s.int_list("seeds", minimum=0), learners, consolidate,
                  model, Training.from_params(params, "lm.base"), Training.from_params(params, "lm.finetune"),
                  s.integer("memory_bytes", minimum=1), evaluation)
        for name in available():
            cfg = parse_text_config(params, name)
            if getattr(cfg, "select_bytes", 0) > evaluation.warmup:
                raise ParamsError(f"lm.learner_params.{name}.select_bytes", f"is {cfg.select_bytes}, more than "
                                  f"lm.eval.warmup {evaluation.warmup}: it would choose on scored bytes",
                                  "use at most lm.eval.warmup")
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def base_path(seed: int) -> Path:
    return LM_MODELS / "base" / f"seed_{seed}.pt"


def state_path(learner: str, phase: str, seed: int, stage: int) -> Path:
    return LM_MODELS / learner / phase / f"seed_{seed}" / f"stage_{stage}.pt"


def final_state_path(learner: str, seed: int, stage: int) -> Path:
    """After stage `stage`: the sleep state for learners with a sleep (from stage 1), else the wake one."""
    slept = text_learner_class(learner).has_sleep and stage > 0
    return state_path(learner, "sleep" if slept else "wake", seed, stage)


def save(payload: dict[str, Any], path: Path) -> None:
    """A model state at `path`, and its sha256 beside it."""
    write_checked(path, lambda out: torch.save(payload, out))


def writing_stage(path: Path) -> str:
    """The stage that writes the state at `path` (models/lm/base/..., models/lm/<learner>/<wake|sleep>/...)."""
    if path.parent.name == "base":
        return "lm_train_base"
    phase_dir = path.parent.parent
    stage = {"wake": "lm_sequential", "sleep": "lm_consolidate"}.get(phase_dir.name)
    return f"{stage}@{phase_dir.parent.name}" if stage else f"<the lm stage that writes {path.parent}>"


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"{path} is missing; fix: run `dvc repro` (the lm stages)")
    return torch.load(read_checked(path, rerun_fix(writing_stage(path))), weights_only=False)


def domains(cfg: LMParams, seed: int, directory: Path = TEXT_DIR) -> list[Domain]:
    return [Domain(name, i, torch.from_numpy(load_slices(directory, name)["train"]), seed)
            for i, name in enumerate(cfg.corpus.domains)]


def train_base(cfg: LMParams, seed: int, general: Domain, progress: bool = False) -> ByteLM:
    torch.manual_seed(derive_seed("lm-base", seed))
    model = ByteLM(cfg.model)
    optimiser = adam(list(model.parameters()), cfg.base.lr)
    model.train()
    for step in tqdm(range(cfg.base.steps), desc=f"base seed {seed}", disable=not progress, leave=False):
        loss = window_losses(model, general.batch(step, cfg.base.batch_size, cfg.model.context)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def load_base(cfg: LMParams, seed: int) -> ByteLM:
    model = ByteLM(cfg.model)
    model.load_state_dict(load(base_path(seed))["state"])
    return model.eval()


def build(params: dict, cfg: LMParams, name: str, seed: int) -> TextLearner:
    ctx = TextContext(load_base(cfg, seed), cfg.finetune, cfg.memory_bytes, seed)
    return text_learner_class(name)(parse_text_config(params, name), ctx)


def checked_name(cfg: LMParams, name: str) -> str:
    if name not in cfg.learners:
        raise ParamsError("lm.learners", f"does not list {name!r}", "run the lm stages only for listed learners")
    return name


def run_wake(params: dict, cfg: LMParams, name: str, seed: int) -> None:
    """The stream for one learner and seed; its state after every stage (wake)."""
    learner = build(params, cfg, name, seed)
    stream = domains(cfg, seed)
    learner.start(stream[0])
    save({"state": learner.state_dict(), "memory": learner.memory_cost()}, state_path(name, "wake", seed, 0))
    for domain in stream[1:]:
        learner.learn_domain(domain)
        save({"state": learner.state_dict(), "memory": learner.memory_cost()},
             state_path(name, "wake", seed, domain.index))


def run_sleep(params: dict, cfg: LMParams, name: str, seed: int) -> list[float]:
    """After every domain: the wake state (with what earlier sleeps consolidated) slept on; seconds each."""
    learner = build(params, cfg, name, seed)
    slept, seconds = None, []
    for domain in domains(cfg, seed)[1:]:
        wake = load(state_path(name, "wake", seed, domain.index))["state"]
        learner.load_state_dict(learner.wake_state_after_sleep(wake, slept))
        start = time.perf_counter()
        learner.sleep(domain)
        seconds.append(time.perf_counter() - start)
        slept = learner.state_dict()
        save({"state": slept, "memory": learner.memory_cost()}, state_path(name, "sleep", seed, domain.index))
    return seconds
