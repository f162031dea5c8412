"""`dualmem`: the dual-memory learner (complementary learning systems).

- Wake (`observe`): every item is written once to the fast episodic memory — no gradient step. With
  `episodic.storage: raw` the memory keeps the item itself (its uint8 image and label, 792 B on MNIST)
  and its key is recomputed from the image whenever the encoder changes; with float32/float16/int8 it
  keeps only the key at that precision. The memory holds as many items as the budget buys
  (`episodic.budget_items`, or `memory.budget_bytes` / bytes per item), with class-balanced FIFO eviction.
- Key (`episodic.key`): `features` = the encoder's output, L2-normalised; `input_and_features` = the
  normalised input beside the normalised features (a conjunctive code binding the sensory detail of an
  episode to its gist, so one item stays distinguishable from its class-mates), the input weighted by
  `episodic.input_weight` w: key = [sqrt(w) input, sqrt(1 - w) features], unit norm, so a cosine
  similarity of two keys is w cos(inputs) + (1 - w) cos(features).
- Sleep (`sleep`, called by the consolidate stage after each task): the slow system — the semantic
  memory, a cosine classifier on the encoder's features, and with `encoder.mode: consolidated` the
  encoder itself — is trained by interleaved, class-balanced replay of the stored items of every class
  revealed so far, with distillation toward the slow system before this sleep (class probabilities
  of the classes it knew and, for the encoder, its features). Then every episodic key is re-encoded.
  `encoder.mode: frozen` keeps the stream's encoder (`encoder.mode` of params) as it is.
- Readout: a gate on familiarity (mean similarity of the k nearest stored items) trusts the episodic
  answer where the query is familiar and the semantic one elsewhere:
  p = g * p_episodic + (1 - g) * p_semantic,  g = sigmoid(sharpness * (familiarity - threshold)),
  the threshold being the `threshold_quantile` of stored items' leave-one-out familiarity.
- Capabilities it overrides: few-shot (nearest prototype of the shots, or kNN with k <= shots per class),
  generalised K ∪ U (one prototype per class: K's from its stored items, U's from the shots, K's scores
  calibrated on stored items to what a prototype of that many shots would score), novelty
  (cosine distance to the `novelty_k`-th nearest stored item, the keys' input reweighted to
  `readout.novelty_input_weight`) and recall (a fresh episodic memory).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dualmem.core.errors import ParamsError
from dualmem.core.optim import adam
from dualmem.core.params import Section, param
from dualmem.core.seeding import derive_seed, seeded_generator
from dualmem.data.stream import Task
from dualmem.encoders import ENCODE_BATCH, random_affine
from dualmem.evals.recall_memory import knn_recall
from dualmem.evals.recall_protocol import RecallOutcome, RecallParams, RecallStream
from dualmem.learners.common.base import LABEL_BYTES, Learner, LearnerContext, parameter_cost
from dualmem.learners.common.readouts import (
    Episodes,
    HeadFit,
    added_shots_scores,
    fresh_memory_scores,
    prototype_scores,
    prototypes_with_known,
    shot_calibration,
)
from dualmem.memory.episodic import KEY_STORAGE, EpisodicMemory, class_means, stored_key_bytes
from dualmem.memory.semantic import SemanticMemory

CALIBRATION_PROBES = 2000
SSL_PROJECTION = 128  # SimCLR (Chen et al. 2020): projection width and NT-Xent temperature
SSL_TEMPERATURE = 0.2


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: each item's other view is its positive, every other item of both views a negative."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sims = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n = len(a)
    return F.cross_entropy(sims, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


@dataclass(frozen=True)
class EncoderConfig:
    mode: str = param(choices=("consolidated", "ssl", "frozen"))  # trained in every sleep: supervised | SimCLR
    augment: bool = param(True)  # random affine views of replayed images while the encoder trains
    feature_distill: float = param(1.0, minimum=0.0)  # weight of (1 - cos) to the pre-sleep features


@dataclass(frozen=True)
class EpisodicConfig:
    k: int = param(minimum=1)
    temperature: float = param(minimum=1e-6)  # softmax temperature over the k cosine similarities
    key: str = param("features", choices=("features", "input_and_features"))
    input_weight: float = param(0.5, minimum=0.0, maximum=1.0)  # input_and_features: the input's share, 0 < w < 1
    storage: str = param("raw", choices=("raw", *KEY_STORAGE))  # raw: the uint8 image; else the key
    budget_items: int | None = param(None, minimum=1)  # None: as many as memory.budget_bytes buys


@dataclass(frozen=True)
class SemanticConfig:
    hidden: int = param(minimum=0)  # 0 = cosine-linear classifier on the features
    input_scale: float = param(minimum=1e-6)
    steps: int = param(minimum=0)  # replay steps per sleep
    batch_size: int = param(minimum=1)
    lr: float = param(minimum=0.0)
    distill_weight: float = param(minimum=0.0)
    distill_temperature: float = param(minimum=1e-6)


@dataclass(frozen=True)
class ReadoutConfig:
    threshold_quantile: float = param(minimum=0.0, maximum=1.0)
    sharpness: float = param(minimum=0.0)
    fewshot: str = param("prototype", choices=("prototype", "knn"))  # new classes from shots
    generalised: str = param("prototype", choices=("prototype", "episodic", "full"))  # K ∪ U rule
    novelty_k: int = param(10, minimum=1)  # novelty = 1 - cosine similarity of the k-th nearest item
    centre: str = param("none", choices=("none", "stored"))  # prototypes: CL2N by the mean stored key
    novelty_input_weight: float | None = param(None, minimum=0.0, maximum=1.0)  # None: the key's own


@dataclass(frozen=True)
class DualMemoryConfig:
    batch_size: int = param(minimum=1)  # write batch; every item is written exactly once
    encoder: EncoderConfig = param()
    episodic: EpisodicConfig = param()
    semantic: SemanticConfig = param()
    readout: ReadoutConfig = param()


class DualMemoryLearner(Learner):
    name = "dualmem"
    Config = DualMemoryConfig
    has_sleep = True

    @classmethod
    def parse(cls, section: Section) -> DualMemoryConfig:
        """The validated config; the input weights of a key input_and_features keep both its parts."""
        cfg = super().parse(section)
        if cfg.episodic.key == "input_and_features":
            for key, weight in (("episodic.input_weight", cfg.episodic.input_weight),
                                ("readout.novelty_input_weight", cfg.readout.novelty_input_weight)):
                if weight is not None and not 0.0 < weight < 1.0:
                    raise ParamsError(section.key(key), f"is {weight}, but the key input_and_features needs "
                                      "both its parts", "use a value strictly between 0 and 1 (or "
                                      f"{section.key('episodic.key')}: features for features alone)")
        return cfg

    def __init__(self, cfg: DualMemoryConfig, ctx: LearnerContext) -> None:
        super().__init__(cfg, ctx)
        if cfg.encoder.mode != "frozen" and cfg.episodic.storage != "raw":
            raise ParamsError("learners.dualmem.episodic.storage", f"is {cfg.episodic.storage!r}, but "
                              f"encoder.mode {cfg.encoder.mode} trains on the stored images",
                              "use raw, or learners.dualmem.encoder.mode: frozen")
        n_pixels = ctx.train_x.shape[1]
        if cfg.encoder.mode != "frozen" and cfg.encoder.augment and math.isqrt(n_pixels) ** 2 != n_pixels:
            raise ParamsError("learners.dualmem.encoder.augment", f"needs square images, and an input has "
                              f"{n_pixels} values", "set it to false for inputs that are not square images")
        self.encoder = copy.deepcopy(ctx.encoder).eval()
        epi, sem = cfg.episodic, cfg.semantic
        self.episodic = EpisodicMemory(self.key_dim, ctx.n_classes, k=epi.k, temperature=epi.temperature,
                                       budget=self.capacity(), storage=self.key_storage)
        torch.manual_seed(derive_seed("dualmem-semantic", ctx.seed))
        self.semantic = SemanticMemory(self.encoder.out_dim, ctx.n_classes, sem.hidden, sem.input_scale)
        self.semantic.register_buffer("threshold", torch.tensor(1.0))
        self.encoder_trained = False  # wake states carry no encoder until a sleep has trained it
        width = self.encoder.out_dim  # SimCLR's projection head, used by the ssl objective only
        self.projection = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                              torch.nn.Linear(width, SSL_PROJECTION))

    # -- what is stored -----------------------------------------------------------------------
    @property
    def key_dim(self) -> int:
        extra = self.ctx.train_x.shape[1] if self.cfg.episodic.key == "input_and_features" else 0
        return extra + self.encoder.out_dim

    @property
    def key_storage(self) -> str:
        return "float32" if self.cfg.episodic.storage == "raw" else self.cfg.episodic.storage

    def feature_item_bytes(self) -> int:
        """Bytes of one stored item: the raw image and label, or the key at its precision and label."""
        if self.cfg.episodic.storage == "raw":
            return self.ctx.raw_item_bytes
        return stored_key_bytes(self.key_dim, self.cfg.episodic.storage) + LABEL_BYTES

    def capacity(self) -> int | None:
        if self.cfg.episodic.budget_items is not None:
            return self.cfg.episodic.budget_items
        return self.ctx.item_capacity(self.feature_item_bytes(), self.name)

    @property
    def input_dim(self) -> int:
        """Width of the key's input part (0 for a key of features only)."""
        return self.key_dim - self.encoder.out_dim

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """The episodic key of inputs x (unit norm): normalised features, or [sqrt(w) normalised input,
        sqrt(1 - w) normalised features] with w = `episodic.input_weight`; made a batch of the encoder at a
        time into one buffer."""
        keys = torch.empty(len(x), self.key_dim)
        w, d = self.cfg.episodic.input_weight, self.input_dim
        feature_scale = math.sqrt(1.0 - w) if d else 1.0
        for start in range(0, len(x), ENCODE_BATCH):
            rows, part = x[start : start + ENCODE_BATCH], slice(start, start + ENCODE_BATCH)
            keys[part, d:] = F.normalize(self.encoder.encode(rows), dim=1).mul_(feature_scale)
            if d:
                keys[part, :d] = F.normalize(rows, dim=1).mul_(math.sqrt(w))
        return keys

    def reweighted(self, keys: torch.Tensor, input_weight: float | None) -> torch.Tensor:
        """Keys with their input part weighted by `input_weight` instead of `episodic.input_weight`
        (still unit norm); as they are where there is no input part or no other weight."""
        w, d = self.cfg.episodic.input_weight, self.input_dim
        if input_weight is None or d == 0 or input_weight == w:
            return keys
        scale = torch.full((keys.shape[1],), math.sqrt((1.0 - input_weight) / (1.0 - w)))
        scale[:d] = math.sqrt(input_weight / w)
        return keys * scale

    def semantic_input(self, keys: torch.Tensor) -> torch.Tensor:
        """The encoder-feature part of keys (the semantic memory's input)."""
        return keys[:, -self.encoder.out_dim :]

    # -- wake and sleep -----------------------------------------------------------------------
    def observe(self, x: torch.Tensor, y: torch.Tensor, ids: np.ndarray) -> None:
        self.episodic.write(self.key(x), y, ids)

    def sleep(self, task: Task) -> None:
        generator = seeded_generator("dualmem-sleep", self.ctx.seed, task.stream, task.index)
        self.consolidate(generator)
        if self.trains_encoder:
            self.episodic.rekey(self.key(self.stored_images()))
            self.encoder_trained = True
        familiarity = self.episodic.self_familiarity(CALIBRATION_PROBES, generator)
        self.semantic.threshold.fill_(float(torch.quantile(familiarity, self.cfg.readout.threshold_quantile)))

    @property
    def trains_encoder(self) -> bool:
        return self.cfg.encoder.mode != "frozen"

    def stored_images(self) -> torch.Tensor:
        """The raw images of the stored items, looked up by their ids into the stream's training set."""
        ids = self.episodic.ids
        if (ids < 0).any():
            raise ValueError(f"{int((ids < 0).sum())} stored items have no id into the training set (written "
                             "outside the stream): raw storage cannot re-make their keys")
        return self.ctx.train_x[torch.from_numpy(ids)]

    def consolidate(self, generator: torch.Generator) -> None:
        """Interleaved class-balanced replay of every stored item into the slow system, distilled toward
        the slow system before this sleep on the classes it already knew."""
        if len(self.episodic) == 0:
            return
        teacher = (copy.deepcopy(self.encoder).eval(), copy.deepcopy(self.semantic).eval())
        old = self.semantic.known.clone()
        self.semantic.known |= torch.bincount(self.episodic.labels, minlength=self.ctx.n_classes) > 0
        trainable = [*self.semantic.parameters()]
        if self.trains_encoder:
            trainable += [*self.encoder.parameters(), *self.projection.parameters()]
        optimiser = adam(trainable, self.cfg.semantic.lr)
        images = self.stored_images() if self.cfg.episodic.storage == "raw" else None
        self.semantic.train()
        self.encoder.train(self.trains_encoder)
        for _ in range(self.cfg.semantic.steps):
            rows = self.episodic.class_balanced_rows(self.cfg.semantic.batch_size, generator)
            loss = self.replay_loss(rows, images, teacher, old, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            self.samples_trained += len(rows)
        self.semantic.eval()
        self.encoder.eval()

    def replay_loss(self, rows: torch.Tensor, images: torch.Tensor | None, teacher: tuple[torch.nn.Module, ...],
                    old: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The sleep objective on one replayed batch: cross-entropy of the semantic memory over the
        classes stored so far (through the encoder when `consolidated`), the self-supervised contrast of
        two views when `ssl`, and distillation toward the pre-sleep slow system."""
        labels = self.episodic.labels[rows]
        mode = self.cfg.encoder.mode
        if images is None:  # keys only: replay the stored features (the encoder cannot train)
            feats = teacher_feats = self.semantic_input(self.episodic.keys[rows])
        else:
            x = images[rows]
            if self.trains_encoder and self.cfg.encoder.augment:
                x = random_affine(x, generator)
            with torch.set_grad_enabled(self.trains_encoder):
                feats = self.encoder(x)
            with torch.no_grad():
                teacher_feats = teacher[0](x) if self.trains_encoder else feats
        classify = feats.detach() if mode == "ssl" else feats
        loss = F.cross_entropy(self.semantic(classify).masked_fill(~self.semantic.known, float("-inf")), labels)
        if mode == "ssl":
            other = self.encoder(random_affine(images[rows], generator))
            loss = loss + contrastive_loss(self.projection(feats), self.projection(other), SSL_TEMPERATURE)
        if old.any():
            loss = loss + self.distillation(classify, teacher[1](teacher_feats), old)
            if self.trains_encoder and self.cfg.encoder.feature_distill > 0:
                similarity = F.cosine_similarity(feats, teacher_feats, dim=1)
                loss = loss + self.cfg.encoder.feature_distill * (1 - similarity).mean()
        return loss

    def distillation(self, feats: torch.Tensor, teacher_logits: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        sem = self.cfg.semantic
        if sem.distill_weight == 0:
            return torch.zeros(())
        t = sem.distill_temperature
        target = torch.softmax(teacher_logits.detach()[:, old] / t, dim=1)
        student = torch.log_softmax(self.semantic(feats)[:, old] / t, dim=1)
        return sem.distill_weight * t * t * F.kl_div(student, target, reduction="batchmean")

    def wake_state_after_sleep(self, wake: dict[str, Any], slept: dict[str, Any] | None) -> dict[str, Any]:
        if slept is None:
            return wake
        return {**wake, **{key: slept[key] for key in ("semantic", "encoder", "projection") if key in slept}}

    # -- readout ------------------------------------------------------------------------------
    def gate(self, familiarity: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cfg.readout.sharpness * (familiarity - self.semantic.threshold))

    def gated(self, memory: EpisodicMemory, feats: torch.Tensor) -> torch.Tensor:
        readout = memory.read(feats)
        if not self.semantic.known.any():
            return readout.probs
        g = self.gate(readout.familiarity).unsqueeze(1)
        return g * readout.probs + (1 - g) * self.semantic.probs(self.semantic_input(feats))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The episodic key: what this learner stores and reads by."""
        return self.key(x)

    @torch.no_grad()
    def proba_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.gated(self.episodic, feats)

    def centred(self, keys: torch.Tensor) -> torch.Tensor:
        """Keys as the prototype readouts compare them: with `readout.centre: stored`, minus
        the mean of the stored keys (revealed items only; SimpleShot's CL2N) and L2-normalised again."""
        if self.cfg.readout.centre == "none" or len(self.episodic) == 0:
            return keys
        return F.normalize(keys - self.episodic.keys.mean(0), dim=-1)

    def centred_episodes(self, episodes: Episodes) -> Episodes:
        return replace(episodes, support=self.centred(episodes.support), query=self.centred(episodes.query))

    @torch.no_grad()
    def fewshot_scores(self, episodes: Episodes, fit: HeadFit) -> torch.Tensor:
        """Nearest prototype of the shots, or the shots in a fresh episodic memory read by kNN."""
        episodes = self.centred_episodes(episodes)
        if self.cfg.readout.fewshot == "prototype":
            return prototype_scores(episodes)
        return fresh_memory_scores(episodes, self.episodic.k, self.episodic.temperature)

    @torch.no_grad()
    def generalised_scores(self, episodes: Episodes, known: list[int], fit: HeadFit) -> torch.Tensor:
        """One prototype per class (K: mean stored key; U: mean of its shots), or U's shots written into
        a copy of the episodic memory read by kNN (episodic) or by the gated readout (full)."""
        rule = self.cfg.readout.generalised
        if rule == "prototype":
            shots = episodes.support.shape[1] // (episodes.n_way - len(known))
            generator = seeded_generator("dualmem-shot-calibration", self.ctx.seed, shots)
            keys = self.centred(self.episodic.keys)
            offset = shot_calibration(keys, self.episodic.labels, known, shots, generator)
            means = class_means(keys, self.episodic.labels, known, self.ctx.n_classes)
            return prototypes_with_known(means, self.centred_episodes(episodes), len(known), known_offset=offset)
        return added_shots_scores(self.episodic, episodes, self.gated if rule == "full" else None)

    @torch.no_grad()
    def novelty_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity of the `novelty_k`-th nearest stored item, both keys' input part weighted
        by `readout.novelty_input_weight`."""
        weight = self.cfg.readout.novelty_input_weight
        memory = copy.copy(self.episodic)
        memory.keys = self.reweighted(self.episodic.keys, weight)
        k = min(self.cfg.readout.novelty_k, len(memory))
        return 1.0 - memory.read(self.reweighted(feats, weight), k=k).kth_similarity

    def recall(self, stream: RecallStream, cfg: RecallParams, progress: bool = False) -> RecallOutcome:
        """A fresh episodic memory of this learner's keys within its budget, charged its bytes per item."""
        out = knn_recall(self.features, stream, cfg, self.episodic.budget, self.episodic.temperature, progress,
                         storage=self.key_storage)
        return replace(out, bytes_per_item=float(self.feature_item_bytes()))

    def known_classes(self) -> set[int]:
        stored = set(torch.unique(self.episodic.labels).tolist())
        consolidated = set(self.semantic.known.nonzero().flatten().tolist())
        return super().known_classes() | stored | consolidated

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "episodic": self.episodic.state_dict(), "semantic": self.semantic.state_dict()}
        if self.encoder_trained:
            state["encoder"] = self.encoder.state_dict()
        if self.cfg.encoder.mode == "ssl":
            state["projection"] = self.projection.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.encoder_trained = "encoder" in state
        self.encoder.load_state_dict(state.get("encoder", self.ctx.encoder.state_dict()))
        if "projection" in state:
            self.projection.load_state_dict(state["projection"])
        self.episodic.load_state_dict(state["episodic"], lambda ids: self.key(self.ctx.train_x[torch.from_numpy(ids)]))
        self.semantic.load_state_dict(state["semantic"])

    def memory_cost(self) -> dict[str, int]:
        n = len(self.episodic)
        modules = [self.encoder, self.semantic, *([self.projection] if self.cfg.encoder.mode == "ssl" else [])]
        return parameter_cost(*modules, items=n, item_bytes=n * self.feature_item_bytes())
