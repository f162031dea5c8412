"""The dual memory at full strength, tested where it can fail: every encoder mode under the leakage rule
(with a sleep that peeks as positive control), readouts that match their test (k never above the shots
per class, a one-shot class that can win a generalised query, novelty scored item by item), a flat
recall-by-age curve, and bytes per item by key storage."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dualmem.core.errors import ParamsError
from dualmem.core.params import Section
from dualmem.encoders import EncoderParams, affine_sampling_grid, random_affine, train_stream_encoder
from dualmem.evals.recall import age_curve
from dualmem.evals.recall_memory import knn_recall
from dualmem.evals.recall_protocol import RecallParams, make_recall_stream
from dualmem.learners import LearnerContext, learner_class
from dualmem.learners.common.readouts import (
    Episodes,
    added_shots_scores,
    fresh_memory_scores,
    prototype_scores,
    prototypes_with_known,
    shot_calibration,
)
from dualmem.memory.episodic import EpisodicMemory, class_means, round_to_storage

from .conftest import digits_stream, perturb_classes
from .test_leakage import state_tensors

ENC = EncoderParams([32, 32], "first_task", 2, 1e-3, 64)
MODES = ("consolidated", "ssl", "frozen")


def dual_memory(stream, tiny_params: dict, budget: int | None = 14400, **episodic: object):
    """The tiny profile's dual memory on `stream` (sections of `episodic` overridden)."""
    section = copy.deepcopy(tiny_params["learners"]["dualmem"])
    section["semantic"]["steps"] = 20
    for key, value in episodic.items():
        group, _, leaf = key.partition("__")
        section[group][leaf] = value
    encoder, _ = train_stream_encoder(stream, ENC, progress=False)
    cls = learner_class("dualmem")
    cfg = cls.parse(Section(section, "learners.dualmem"))
    return cls(cfg, LearnerContext(encoder, stream.n_classes, stream.seed, stream.x_train, budget))


def run_tasks(learner, stream, n: int, peek: list[int] | None = None) -> None:
    for index in range(n):
        task = stream.task(index)
        learner.learn_task(task)
        if peek:  # the leak: items of unrevealed classes slipped into the memory before sleep
            rows = np.flatnonzero(np.isin(stream.dataset.y_train, peek))[:20]
            learner.episodic.write(learner.key(stream.x_train[torch.from_numpy(rows)]),
                                   stream.y_train[torch.from_numpy(rows)], rows)
        learner.sleep(task)


def same_learner(a, b) -> bool:
    """State tensors (encoder included when it trains) and the stored keys themselves."""
    ta, tb = state_tensors(a.state_dict()), state_tensors(b.state_dict())
    same_state = len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb, strict=True))
    return same_state and torch.equal(a.episodic.keys, b.episodic.keys)


@pytest.mark.parametrize("mode", MODES)
def test_every_encoder_mode_is_blind_to_unrevealed_classes(mode: str, digits, tiny_params, one_thread) -> None:
    stream = digits_stream(digits)
    future = [c for t in stream.spec.tasks[2:] for c in t]
    perturbed = digits_stream(perturb_classes(digits, future))
    a = dual_memory(stream, tiny_params, encoder__mode=mode)
    b = dual_memory(perturbed, tiny_params, encoder__mode=mode)
    run_tasks(a, stream, 2)
    run_tasks(b, perturbed, 2)
    assert same_learner(a, b), f"{mode}: the state after task 2 depends on classes not yet revealed"
    if mode != "frozen":  # the sleep did train the encoder (so the comparison above covers it)
        assert not all(torch.equal(p, q) for p, q in zip(a.encoder.parameters(), a.ctx.encoder.parameters(),
                                                           strict=True))


@pytest.mark.parametrize("mode", ("consolidated", "frozen"))
def test_the_comparison_catches_a_sleep_that_replays_unrevealed_items(mode: str, digits, tiny_params,
                                                                       one_thread) -> None:
    """Positive control: future-class items written behind the guard make the two learners differ."""
    stream = digits_stream(digits)
    future = [c for t in stream.spec.tasks[2:] for c in t]
    perturbed = digits_stream(perturb_classes(digits, future))
    a = dual_memory(stream, tiny_params, encoder__mode=mode)
    b = dual_memory(perturbed, tiny_params, encoder__mode=mode)
    run_tasks(a, stream, 1, peek=future)
    run_tasks(b, perturbed, 1, peek=future)
    assert not same_learner(a, b)


def test_sleep_re_encodes_every_key_with_the_trained_encoder(digits, tiny_params, one_thread) -> None:
    stream = digits_stream(digits)
    learner = dual_memory(stream, tiny_params, encoder__mode="consolidated")
    run_tasks(learner, stream, 2)
    images = stream.x_train[torch.from_numpy(learner.episodic.ids)]
    assert torch.allclose(learner.episodic.keys, F.normalize(learner.key(images), dim=1))
    reloaded = dual_memory(stream, tiny_params, encoder__mode="consolidated")
    reloaded.load_state_dict(learner.state_dict())
    assert torch.equal(reloaded.episodic.keys, learner.episodic.keys)


def test_consolidated_encoder_needs_the_stored_images(digits, tiny_params) -> None:
    with pytest.raises(ParamsError, match="learners.dualmem.episodic.storage"):
        dual_memory(digits_stream(digits), tiny_params, encoder__mode="consolidated", episodic__storage="int8")


@pytest.mark.parametrize(("storage", "bytes_per_item"), [("raw", 64 + 8), ("float32", 4 * 96 + 8),
                                                         ("float16", 2 * 96 + 8), ("int8", 96 + 4 + 8)])
def test_bytes_per_item_follow_the_key_storage(storage: str, bytes_per_item: int, digits, tiny_params) -> None:
    stream = digits_stream(digits)
    learner = dual_memory(stream, tiny_params, encoder__mode="frozen", episodic__storage=storage)
    assert learner.key_dim == 64 + 32  # input_and_features: 8x8 pixels beside 32 features
    assert learner.feature_item_bytes() == bytes_per_item
    assert learner.episodic.budget == 14400 // bytes_per_item
    learner.learn_task(stream.task(0))
    cost = learner.memory_cost()
    assert cost["item_bytes"] == cost["items"] * bytes_per_item


def test_stored_keys_round_to_their_precision() -> None:
    keys = F.normalize(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    for storage, tolerance in (("float32", 0.0), ("float16", 1e-3), ("int8", 1e-2)):
        error = (round_to_storage(keys, storage) - keys).abs().max()
        assert error <= tolerance
    assert (round_to_storage(keys, "int8") - keys).abs().max() > 0  # int8 does round


def test_augmentation_keeps_shape_and_moves_pixels() -> None:
    x = torch.rand(8, 64)
    out = random_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)
    with pytest.raises(ValueError, match="square"):
        random_affine(torch.rand(2, 60), torch.Generator())


def test_sampling_grid_equals_affine_grid() -> None:
    """random_affine's elementwise grid against torch's F.affine_grid, random thetas, an odd and an even side
    (bitwise equal on the machine that made the committed results; allclose where a bmm fuses its sums)."""
    g = torch.Generator().manual_seed(0)
    for side in (5, 28):
        theta = torch.randn(7, 2, 3, generator=g)
        expected = F.affine_grid(theta, [7, 1, side, side], align_corners=False)
        assert torch.allclose(affine_sampling_grid(theta, side), expected, rtol=0, atol=1e-6)


# -- readouts -------------------------------------------------------------------------------------
def overlapping_episodes(shots: int, n_ep: int = 200, ways: int = 4, queries: int = 15, dim: int = 16,
                         spread: float = 1.6, seed: int = 0) -> tuple[Episodes, torch.Tensor]:
    """Gaussian classes whose clouds overlap: one shot is a noisy estimate of its class, five are better."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ep, ways, dim, generator=g)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(n_ep, -1)
    query_y = torch.arange(ways).repeat_interleave(queries).expand(n_ep, -1)
    support = centres.gather(1, support_y.unsqueeze(2).expand(-1, -1, dim)) + spread * torch.randn(
        n_ep, ways * shots, dim, generator=g)
    query = centres.gather(1, query_y.unsqueeze(2).expand(-1, -1, dim)) + spread * torch.randn(
        n_ep, ways * queries, dim, generator=g)
    classes = torch.arange(ways).expand(n_ep, -1)
    return Episodes(support, support_y, query, classes), query_y


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return float((scores.argmax(2) == y).float().mean())


@pytest.mark.parametrize("readout", ["prototype", "knn"])
def test_five_shots_beat_one_on_overlapping_classes(readout: str) -> None:
    scores = {}
    for shots in (1, 5):
        episodes, y = overlapping_episodes(shots)
        read = prototype_scores(episodes) if readout == "prototype" else fresh_memory_scores(episodes, 10, 0.05)
        scores[shots] = accuracy(read, y)
    assert scores[5] > scores[1] + 0.05, scores


def test_knn_few_shot_k_never_exceeds_the_shots_per_class() -> None:
    """With k capped by shots per class, a query that sits on a shot of its class is answered by it;
    an uncapped 10-NN over 4 x 1 shots would have to count three shots of other classes."""
    episodes, y = overlapping_episodes(1, spread=0.0)
    assert accuracy(fresh_memory_scores(episodes, 10, 50.0), y) == 1.0


def known_and_novel(n_known: int = 6, per_class: int = 300, dim: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_known + 2, dim, generator=g), dim=1) * 3
    labels = torch.arange(n_known).repeat_interleave(per_class)
    keys = centres[labels] + torch.randn(len(labels), dim, generator=g)
    memory = EpisodicMemory(dim, n_known + 2, k=10, temperature=0.05)
    memory.write(keys, labels)
    shots = centres[n_known:] + torch.randn(2, dim, generator=g)  # one shot per novel class
    queries = torch.cat([centres[c] + torch.randn(20, dim, generator=g) for c in range(n_known + 2)])
    query_y = torch.arange(n_known + 2).repeat_interleave(20)
    episodes = Episodes(shots.unsqueeze(0), torch.tensor([[n_known, n_known + 1]]), queries.unsqueeze(0),
                        torch.arange(n_known + 2).unsqueeze(0))
    return memory, episodes, query_y, list(range(n_known))


def test_generalised_prototypes_let_a_one_shot_class_win() -> None:
    memory, episodes, y, known = known_and_novel()
    novel = y >= len(known)
    offset = shot_calibration(memory.keys, memory.labels, known, 1, torch.Generator().manual_seed(0))
    means = class_means(memory.keys, memory.labels, known, memory.n_classes)
    scores = prototypes_with_known(means, episodes, len(known), known_offset=offset)[0]
    hits = scores.argmax(1) == y
    assert hits[novel].float().mean() > 0.5 and hits[~novel].float().mean() > 0.5
    # the flaw it fixes: one stored shot is outvoted by the thousands of K items in a 10-NN vote
    knn = added_shots_scores(memory, episodes)[0]
    assert (knn.argmax(1) == y)[novel].float().mean() < hits[novel].float().mean()


def scores_read_no_other_query(score: object, episodes: Episodes) -> bool:
    """An episode's first query scores the same when every other query of the episode is replaced."""
    other = replace(episodes, query=torch.cat([episodes.query[:, :1], 5 + 3 * episodes.query[:, 1:]], dim=1))
    return torch.allclose(score(episodes)[:, 0], score(other)[:, 0], atol=1e-6)


def test_centred_prototypes_centre_on_stored_keys_only(digits, tiny_params, one_thread) -> None:
    """`readout.centre: stored` (CL2N) subtracts the mean stored key, a statistic of revealed items, never
    of the episode; positive control: centring on the episode's own queries (transductive) is caught."""
    stream = digits_stream(digits, "openworld")
    learner = dual_memory(stream, tiny_params, readout__centre="stored")
    run_tasks(learner, stream, stream.n_tasks)
    episodes, _ = overlapping_episodes(1, n_ep=5, dim=learner.key_dim)
    episodes = replace(episodes, support=F.normalize(episodes.support, dim=-1),
                       query=F.normalize(episodes.query, dim=-1))
    centre = learner.episodic.keys.mean(0)
    assert torch.allclose(learner.centred(episodes.query), F.normalize(episodes.query - centre, dim=-1))
    assert not torch.allclose(learner.fewshot_scores(episodes, None), prototype_scores(episodes))
    assert scores_read_no_other_query(lambda e: learner.fewshot_scores(e, None), episodes)

    def transductive(e: Episodes) -> torch.Tensor:
        mean = e.query.mean(dim=(0, 1))
        return prototype_scores(replace(e, support=F.normalize(e.support - mean, dim=-1),
                                        query=F.normalize(e.query - mean, dim=-1)))
    assert not scores_read_no_other_query(transductive, episodes)


def test_dual_memory_novelty_scores_each_item_alone(digits, tiny_params, one_thread) -> None:
    """No transduction: an item's score is the same whether or not the other test set is scored beside it."""
    stream = digits_stream(digits, "openworld")
    learner = dual_memory(stream, tiny_params)
    run_tasks(learner, stream, stream.n_tasks)
    known, _ = stream.test_split(stream.classes_up_to(stream.n_tasks - 1))
    novel, _ = stream.test_split(stream.held_out)
    alone = learner.novelty_from_features(learner.features(known))
    together = learner.novelty_from_features(learner.features(torch.cat([known, novel])))[: len(known)]
    assert torch.allclose(alone, together, atol=1e-6)


def test_key_gives_its_input_part_the_input_weight(digits, tiny_params) -> None:
    """key = [sqrt(w) input, sqrt(1 - w) features]: a key similarity is w cos(inputs) + (1 - w) cos(features)."""
    stream = digits_stream(digits)
    learner = dual_memory(stream, tiny_params, episodic__key="input_and_features", episodic__input_weight=0.8)
    x = stream.x_train[:20]
    keys = learner.key(x)
    assert torch.allclose(keys[:, :64].square().sum(1), torch.full((20,), 0.8))
    feats = F.normalize(learner.encoder.encode(x), dim=1)
    inputs = F.normalize(x, dim=1)
    assert torch.allclose(keys @ keys.T, 0.8 * inputs @ inputs.T + 0.2 * feats @ feats.T, atol=1e-6)


def test_novelty_reads_the_keys_at_its_own_input_weight(digits, tiny_params, one_thread) -> None:
    """Novelty at readout.novelty_input_weight 0.3 over keys stored at 0.8 scores what a memory of keys
    stored at 0.3 scores; the weight is not ignored (without it the scores differ)."""
    stream = digits_stream(digits, "openworld")
    mixed = {"episodic__key": "input_and_features", "encoder__mode": "frozen"}
    stored_at_08 = dual_memory(stream, tiny_params, **mixed, episodic__input_weight=0.8,
                               readout__novelty_input_weight=0.3)
    stored_at_03 = dual_memory(stream, tiny_params, **mixed, episodic__input_weight=0.3,
                               readout__novelty_input_weight=None)
    own_weight = dual_memory(stream, tiny_params, **mixed, episodic__input_weight=0.8,
                             readout__novelty_input_weight=None)
    x = torch.cat([stream.test_split(stream.classes_up_to(stream.n_tasks - 1))[0],
                   stream.test_split(stream.held_out)[0]])
    scores = []
    for learner in (stored_at_08, stored_at_03, own_weight):
        run_tasks(learner, stream, stream.n_tasks)
        scores.append(learner.novelty_from_features(learner.features(x)))
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
    assert not torch.allclose(scores[0], scores[2], atol=1e-3)


@pytest.mark.parametrize(("key", "value"), [("episodic__input_weight", 1.0), ("episodic__input_weight", 0.0),
                                            ("readout__novelty_input_weight", 1.0)])
def test_input_weights_keep_both_parts_of_the_key(key: str, value: float, digits, tiny_params) -> None:
    with pytest.raises(ParamsError, match=f"learners.dualmem.{key.replace('__', '.')}"):
        dual_memory(digits_stream(digits), tiny_params, episodic__key="input_and_features", **{key: value})


# -- recall ---------------------------------------------------------------------------------------
def age_spread_is_noise(correct: np.ndarray, bins: int) -> bool:
    """The recall-by-age curve is flat: every bin within 3 binomial standard errors of the mean."""
    _, curve = age_curve(correct, bins)
    p, n = float(np.mean(correct)), len(correct) / bins
    return max(abs(c - p) for c in curve) <= 3 * np.sqrt(p * (1 - p) / n) + 1e-9


def test_recall_by_age_is_flat_when_every_item_is_distinct() -> None:
    cues = (torch.rand(4000, 96, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    cfg = RecallParams.from_params({"evaluate_recall": {
        "sizes": [4000], "n_targets": 8, "noise_std": 0.45, "dropout": 0.6, "k": 1, "candidates": 16,
        "age_bins": 8, "query_batch": 512, "online": {"batch_size": 10, "lr": 0.001},
        "offline": {"epochs": 1, "batch_size": 32, "min_steps": 1, "lr": 0.001}}})
    outcome = knn_recall(lambda x: x, make_recall_stream(cues, cfg, seed=0), cfg)
    assert 0.3 < outcome.recall[4000] < 0.99  # hard enough that a bias would show
    assert age_spread_is_noise(outcome.correct, 8)
    # positive control: a memory that favours old items (recall falls with age) fails the check
    biased = np.random.default_rng(0).random(4000) < np.linspace(0.9, 0.5, 4000)
    assert not age_spread_is_noise(biased, 8)


def test_recall_stores_keys_at_their_precision() -> None:
    cues = torch.rand(300, 32, generator=torch.Generator().manual_seed(1))
    cfg = replace(RecallParams.from_params({"evaluate_recall": {
        "sizes": [300], "n_targets": 8, "noise_std": 0.05, "dropout": 0.0, "k": 1, "candidates": 0,
        "age_bins": 2, "query_batch": 64, "online": {"batch_size": 10, "lr": 0.001},
        "offline": {"epochs": 1, "batch_size": 32, "min_steps": 1, "lr": 0.001}}}))
    rs = make_recall_stream(cues, cfg, seed=0)
    exact = knn_recall(lambda x: x, rs, cfg, budget=300)
    coarse = knn_recall(lambda x: x, rs, cfg, budget=300, storage="int8")
    assert coarse.bytes_per_item < exact.bytes_per_item
