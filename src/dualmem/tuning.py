"""The validation protocol on which the dual memory's hyperparameters are chosen: revealed data only.

On each open-world seed the learner runs the stream's tasks but the last h (`--held-out-tasks`, 1 by
default; wake, then sleep). The classes of those last tasks of K — data the stream reveals, never a class
of U — play the novel classes: their training items are split in two halves, shots from one and queries
from the other. Known-class queries are training items of the earlier tasks that the memory did not keep.
No test item of any class and no item of U is read. On this view the Test 2 protocol runs unchanged
(`evaluate_fewshot`, ways = the pseudo-novel classes), the Test 3 score gives an AUROC of known against
pseudo-novel items, and the learner's accuracy on the known-class items it did not keep stands in for
Test 1 (`acc_known`). Test 5's protocol runs on a recall stream of its own draw (other cue order, targets
and corruption) whose cues are the training images of the classes the stream has revealed, at each
`evaluate_recall.sizes` entry within the learner's memory budget (`recall_N`).

`python -m dualmem.tuning [--seeds N] [--held-out-tasks H] [key=value ...]` prints these for params.yaml
with the overrides (e.g. `learners.dualmem.encoder.feature_distill=0`); docs/PROTOCOL.md records what was
chosen on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np
import torch
import yaml

from dualmem.core.params import load_params
from dualmem.core.seeding import derive_seed, set_threads
from dualmem.detection_metrics import auroc
from dualmem.evals.fewshot import FewshotParams, evaluate_learner
from dualmem.evals.recall_protocol import RecallParams, make_recall_stream
from dualmem.learners import Learner
from dualmem.runner import build_learner, open_stream, stream_seeds

LEARNER = "dualmem"


class HeldOutTasksError(ValueError):
    """--held-out-tasks leaves no known task, or asks for more tasks than the stream has."""


class ValidationView:
    """What `evaluate_fewshot` reads of a stream, cut from the data a stream of n tasks reveals: the
    first n - h tasks are known, the last h tasks' classes play the held-out ones."""

    def __init__(self, stream, stored_ids: np.ndarray, held_out_tasks: int = 1) -> None:
        self.seed = stream.seed
        self.n_tasks = stream.n_tasks - held_out_tasks
        self.known = stream.classes_up_to(self.n_tasks - 1)
        held_out_tasks = [stream.task(i) for i in range(self.n_tasks, stream.n_tasks)]
        held_out_ids = np.concatenate([task.ids for task in held_out_tasks])
        self.held_out = [c for task in held_out_tasks for c in task.classes]
        order = np.random.default_rng([stream.seed, 0x7A1]).permutation(len(held_out_ids))
        half = len(order) // 2
        self.shot_ids, self.query_ids = held_out_ids[order[:half]], held_out_ids[order[half:]]
        known_ids = np.flatnonzero(np.isin(stream.dataset.y_train, self.known))
        self.known_ids = np.setdiff1d(known_ids, stored_ids)
        self.x, self.y = stream.x_train, stream.y_train

    def classes_up_to(self, index: int) -> list[int]:
        return self.known if index == self.n_tasks - 1 else []

    def rows(self, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(ids)
        return self.x[index], self.y[index]

    def train_split(self, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows(self.shot_ids)

    def test_split(self, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows(self.query_ids if set(classes) == set(self.held_out) else self.known_ids)


def learner_on_known_tasks(params: dict, seed: int, held_out_tasks: int = 1) -> tuple[Learner, ValidationView]:
    stream = open_stream(params, "openworld", seed)
    if not 1 <= held_out_tasks < stream.n_tasks:
        raise HeldOutTasksError(f"--held-out-tasks is {held_out_tasks}; give 1 to {stream.n_tasks - 1} (the stream "
                                f"reveals {stream.n_tasks} tasks, and one must stay known)")
    learner = build_learner(params, LEARNER, stream)
    for index in range(stream.n_tasks - held_out_tasks):
        task = stream.task(index)
        learner.learn_task(task)
        learner.sleep(task)
    return learner, ValidationView(stream, np.asarray(learner.episodic.ids), held_out_tasks)


def validate(params: dict, seed: int, episodes: int, held_out_tasks: int = 1) -> dict[str, float]:
    learner, view = learner_on_known_tasks(params, seed, held_out_tasks)
    cfg = FewshotParams.from_params(params)
    cfg = replace(cfg, ways=len(view.held_out), episodes=episodes, gen_episodes=min(cfg.gen_episodes, episodes))
    metrics, _ = evaluate_learner(learner, view, cfg)
    known_x, known_y = view.test_split(view.known)
    known_feats = learner.features(known_x)
    metrics["acc_known"] = float((learner.proba_from_features(known_feats).argmax(1) == known_y).float().mean())
    known = learner.novelty_from_features(known_feats)
    novel = learner.novelty_from_features(learner.features(view.test_split(view.held_out)[0]))
    labels = np.r_[np.zeros(len(known)), np.ones(len(novel))]
    metrics["auroc"] = auroc(labels, torch.cat([known, novel]).numpy())
    return metrics | recall_on_revealed(learner, view, params)


def recall_on_revealed(learner: Learner, view: ValidationView, params: dict) -> dict[str, float]:
    """Test 5's protocol on a stream of its own draw over the revealed classes' training images, at the
    sizes the learner's memory holds whole."""
    cfg = RecallParams.from_params(params)
    budget = learner.episodic.budget or max(cfg.sizes)
    cfg = replace(cfg, sizes=[n for n in cfg.sizes if n <= budget] or cfg.sizes[:1])
    revealed = np.flatnonzero(np.isin(view.y.numpy(), [*view.known, *view.held_out]))
    stream = make_recall_stream(view.x[torch.from_numpy(revealed)], cfg, derive_seed("recall-validation", view.seed))
    return {f"recall_{n}": value for n, value in learner.recall(stream, cfg).recall.items()}


def with_overrides(params: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dualmem.tuning", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="first N open-world seeds")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--held-out-tasks", type=int, default=1,
                        help="last tasks of K whose classes play the novel ones (2: 4-way, as Test 2)")
    parser.add_argument("overrides", nargs="*", help="key=value changes to params.yaml")
    args = parser.parse_args(argv)
    params = with_overrides(load_params(), args.overrides)
    set_threads(params)
    seeds = stream_seeds(params, "openworld")[: args.seeds]
    try:
        per_seed = [validate(params, seed, args.episodes, args.held_out_tasks) for seed in seeds]
    except HeldOutTasksError as error:
        parser.error(str(error))
    means = {key: round(float(np.mean([m[key] for m in per_seed])), 4) for key in per_seed[0]}
    json.dump({"overrides": args.overrides, "seeds": args.seeds, "held_out_tasks": args.held_out_tasks,
               "validation": means}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
