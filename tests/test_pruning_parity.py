"""The pruning rules decide as Ray Tune's ASHAScheduler and Optuna's pruners do (the oracles).

Each test feeds 1,000 random event streams (a seeded generator) to one of our rules and
to its oracle, the same reports in the same order, and asserts the same decision at
every report.  ``others`` is what arrival mode shows a rule: every other competitor's
series so far.  A stream has 2..30 competitors with random curves (ties from rounding,
an occasional NaN or infinity), reports interleaved at random (competitors start at
random moments), and for the step rules random endings (complete or failed) that
decide which others count.  Once a competitor is pruned its later reports are dropped.
Step ``k`` is ``k`` epochs completed.
"""

from __future__ import annotations

import abc
import math
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest

from expman.config.pruning import PruningSpec
from expman.pruning import Rule, Series, bracket_of, make_rule, rung_epochs

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray.tune")
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
TrialState = optuna.trial.TrialState

STREAMS = 1000
#: The longest curve: enough for four rungs at factor 2, or warm-up and two checks;
#: the oracles' cost (Optuna's should_prune above all) grows with it.
RUNG_EPOCHS, STEP_EPOCHS = 11, 6
#: A stand-in for "no end" where a Ray scheduler needs one.
UNBOUNDED = 10**6


@dataclass
class Stream:
    """One random run of a sweep: the reports in arrival order and how each competitor ended."""

    seed: int
    curves: dict[str, list[float]]  # the value after epochs 1, 2, ...
    endings: dict[str, str]  # complete | failed, after its last report
    events: list[tuple[str, int]] = field(default_factory=list)  # (competitor, epochs)


def _curve(rng: random.Random, length: int, ties: bool, mode: str) -> list[float]:
    level, slope = rng.uniform(0.2, 2.0), rng.uniform(-0.3, 0.05)
    if mode == "max":
        slope = -slope
    values = []
    for k in range(length):
        value = level + slope * k + rng.gauss(0, 0.15)
        if ties:
            value = round(value, 1)
        roll = rng.random()
        if roll < 0.03:
            value = math.nan
        elif roll < 0.035:
            value = rng.choice([math.inf, -math.inf])
        values.append(value)
    return values


def make_stream(seed: int, max_length: int, mode: str) -> Stream:
    """Random competitors, curves and interleaving, all drawn from ``seed``."""
    rng = random.Random(seed)
    count = rng.randint(2, 30)
    ties = rng.random() < 0.5
    curves: dict[str, list[float]] = {}
    endings: dict[str, str] = {}
    for i in range(count):
        name = f"t{i:02d}"
        curves[name] = _curve(rng, rng.randint(1, max_length), ties, mode)
        endings[name] = "failed" if rng.random() < 0.1 else "complete"
    stream = Stream(seed, curves, endings)
    waiting = list(curves)
    running: dict[str, int] = {}
    start_rate = rng.uniform(0.05, 1.0)
    while waiting or running:
        if waiting and (not running or rng.random() < start_rate):
            running[waiting.pop(0)] = 0
            continue
        name = rng.choice(sorted(running))
        running[name] += 1
        stream.events.append((name, running[name]))
        if running[name] == len(curves[name]):
            del running[name]
    return stream


class Oracle(abc.ABC):
    """The library's decision at each report, driven as its own tests drive it."""

    @abc.abstractmethod
    def report(self, name: str, epochs: int, value: float) -> bool:  # True: prune
        """The oracle's decision for ``name``'s report after ``epochs`` epochs."""

    def pruned(self, name: str) -> None:  # noqa: B027 - most oracles need not hear it
        """``name`` was pruned (its later reports are dropped)."""

    def ended(self, name: str, how: str, epochs: int, value: float) -> None:  # noqa: B027
        """``name`` ended ``how`` after ``epochs`` epochs at ``value``."""


class RayOracle(Oracle):
    """``ASHAScheduler`` fed ``on_trial_add`` / ``on_trial_result`` with minimal trials."""

    def __init__(self, spec: PruningSpec, brackets: Callable[[str], int]) -> None:
        self.scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric="m",
            mode=spec.mode,
            max_t=spec.max_epochs or UNBOUNDED,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
            brackets=spec.brackets,
        )
        self.brackets = brackets
        self.trials: dict[str, Any] = {}

    def report(self, name: str, epochs: int, value: float) -> bool:
        if name not in self.trials:
            trial = self.trials[name] = SimpleNamespace(trial_id=name)
            self.scheduler.on_trial_add(None, trial)
            # Ray draws a bracket from NumPy's global RNG; ours is a hash. The
            # brackets' bookkeeping is what is compared, so place the trial in ours.
            self.scheduler._trial_info[name] = self.scheduler._brackets[self.brackets(name)]
        result = {"training_iteration": epochs, "m": value}
        action = self.scheduler.on_trial_result(None, self.trials[name], result)
        return action == TrialScheduler.STOP

    def ended(self, name: str, how: str, epochs: int, value: float) -> None:
        if how == "complete":
            result = {"training_iteration": epochs, "m": value}
            self.scheduler.on_trial_complete(None, self.trials[name], result)
        else:
            self.scheduler.on_trial_error(None, self.trials[name])


class OptunaOracle(Oracle):
    """A real in-memory study: ``ask`` at a competitor's first report, then ``report`` /
    ``should_prune`` per report, ``tell`` as it ends."""

    def __init__(self, spec: PruningSpec, pruner: Any) -> None:
        direction = "minimize" if spec.mode == "min" else "maximize"
        self.study = optuna.create_study(direction=direction, pruner=pruner)
        self.trials: dict[str, Any] = {}
        self.names: list[str] = []  # by trial number

    def report(self, name: str, epochs: int, value: float) -> bool:
        if name not in self.trials:
            self.names.append(name)  # before ask: a sampler may read the bracket
            self.trials[name] = self.study.ask()
        trial = self.trials[name]
        trial.report(value, epochs)
        return bool(trial.should_prune())

    def pruned(self, name: str) -> None:
        self.study.tell(self.trials[name], state=TrialState.PRUNED)

    def ended(self, name: str, how: str, epochs: int, value: float) -> None:
        if how == "complete":
            self.study.tell(self.trials[name], 0.0)
        else:
            self.study.tell(self.trials[name], state=TrialState.FAIL)


@dataclass
class Tally:
    decisions: int = 0
    prunes: int = 0
    judged: int = 0


def replay(stream: Stream, rule: Rule, oracle: Oracle, spec: PruningSpec, tally: Tally) -> None:
    """Feed ``stream`` to ``rule`` and ``oracle`` and assert they agree at every report."""
    values: dict[str, dict[int, float]] = {name: {} for name in stream.curves}
    states: dict[str, str] = dict.fromkeys(stream.curves, "running")
    # Each Series holds its competitor's live dict of values; replaced when its state changes.
    series: dict[str, Series] = {}
    for index, (name, epochs) in enumerate(stream.events):
        if states[name] == "pruned":
            continue  # a pruned competitor's later reports are dropped
        value = stream.curves[name][epochs - 1]
        values[name][epochs] = value
        finished = epochs == len(stream.curves[name])
        if spec.max_epochs is not None and epochs >= spec.max_epochs:
            # Ray stops a trial that reached max_t: it is done, not pruned.
            states[name] = stream.endings[name]
            series[name] = Series(values[name], stream.endings[name])  # type: ignore[arg-type]
            oracle.ended(name, stream.endings[name], epochs, value)
            continue
        if name not in series:
            series[name] = Series(values[name])
        own = series[name]
        others = {other: s for other, s in series.items() if other != name}
        ours = rule.judge(name, epochs, own, others).action if rule.due(name, epochs) else None
        tally.judged += ours is not None
        theirs = oracle.report(name, epochs, value)
        assert (ours == "prune") == theirs, (
            f"stream {stream.seed}, report {index} ({name} after {epochs} epochs, value {value}):"
            f" ours {ours or 'not due'}, the oracle's {'prune' if theirs else 'continue'}"
        )
        tally.decisions += 1
        if theirs:
            tally.prunes += 1
            states[name] = "pruned"
            series[name] = Series(values[name], "pruned")
            oracle.pruned(name)
        elif finished:
            states[name] = stream.endings[name]
            series[name] = Series(values[name], stream.endings[name])  # type: ignore[arg-type]
            oracle.ended(name, stream.endings[name], epochs, value)


def _rung_spec(rng: random.Random, kind: str, rule: str, mode: str) -> PruningSpec:
    grace = rng.randint(1, 3)
    factor: float = rng.choice([2, 3, 4] if rule == "optuna" else [2, 2.5, 3, 4])
    max_epochs = rng.choice([None, rng.randint(grace + 1, RUNG_EPOCHS + 1)])
    spec = PruningSpec(
        type=kind,  # type: ignore[arg-type]
        metric="val_loss" if mode == "min" else "val_acc",
        mode=mode,  # type: ignore[arg-type]
        grace_period=grace,
        reduction_factor=factor,
        max_epochs=max_epochs,
        rule=rule,  # type: ignore[arg-type]
    )
    if kind == "hyperband":
        possible = len(rung_epochs(spec, 0, up_to=(max_epochs or RUNG_EPOCHS) - 1)) or 1
        spec = replace(spec, brackets=rng.randint(1, min(possible, 3)))
    return spec


def _streams(salt: str, count: int = STREAMS) -> Iterator[tuple[random.Random, int, str]]:
    for i in range(count):
        rng = random.Random(f"{salt}/{i}")
        yield rng, rng.getrandbits(32), rng.choice(["min", "max"])


def _check_tally(tally: Tally, streams: int = STREAMS) -> None:
    """The streams exercised both decisions, many times (a parity that never prunes proves
    nothing)."""
    assert tally.prunes > streams // 2, tally
    assert tally.judged - tally.prunes > streams, tally


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy: an all-NaN rung
@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_rule_ray_decides_as_ray_tunes_asha_scheduler(kind: str) -> None:
    """rule ray (arrival) prunes exactly where ASHAScheduler / AsyncHyperBand says STOP."""
    tally = Tally()
    for rng, seed, mode in _streams(f"ray-{kind}"):
        spec = _rung_spec(rng, kind, "ray", mode)
        stream = make_stream(seed, min(spec.max_epochs or RUNG_EPOCHS, RUNG_EPOCHS), mode)
        rule = make_rule(spec, seed=seed)
        oracle = RayOracle(spec, lambda name, spec=spec, seed=seed: bracket_of(spec, seed, name))
        replay(stream, rule, oracle, spec, tally)
    _check_tally(tally)


def test_rule_optuna_decides_as_successive_halving_pruner() -> None:
    """rule optuna (arrival) prunes exactly where SuccessiveHalvingPruner's should_prune does."""
    tally = Tally()
    for rng, seed, mode in _streams("optuna-asha"):
        spec = _rung_spec(rng, "asha", "optuna", mode)
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.grace_period,
            reduction_factor=int(spec.reduction_factor),
            min_early_stopping_rate=0,
            bootstrap_count=0,
        )
        replay(
            make_stream(seed, min(spec.max_epochs or RUNG_EPOCHS, RUNG_EPOCHS), mode),
            make_rule(spec, seed=seed),
            OptunaOracle(spec, pruner),
            spec,
            tally,
        )
    _check_tally(tally)


def test_hyperband_rule_optuna_decides_as_optunas_hyperband_pruner() -> None:
    """hyperband, rule optuna: as HyperbandPruner with its trials placed in our brackets.

    Optuna picks a bracket by CRC-32 of the study name and trial number, and its bracket
    count from max_resource; both are set to ours so that what is compared is the
    per-bracket successive halving on the bracket's trials only.
    """
    tally = Tally()
    # 300 streams: Optuna's bracket studies make each report several times dearer.
    for rng, seed, mode in _streams("optuna-hyperband", 300):
        spec = _rung_spec(rng, "hyperband", "optuna", mode)
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=spec.grace_period,
            max_resource=spec.max_epochs or UNBOUNDED,
            reduction_factor=int(spec.reduction_factor),
        )
        pruner._n_brackets = spec.brackets
        oracle = OptunaOracle(spec, pruner)
        pruner._get_bracket_id = (  # type: ignore[method-assign]
            lambda study, trial, spec=spec, seed=seed, names=oracle.names: bracket_of(
                spec, seed, names[trial.number]
            )
        )
        replay(
            make_stream(seed, min(spec.max_epochs or RUNG_EPOCHS, RUNG_EPOCHS), mode),
            make_rule(spec, seed=seed),
            oracle,
            spec,
            tally,
        )
    _check_tally(tally, 300)


def _step_spec(rng: random.Random, kind: str, mode: str) -> PruningSpec:
    return PruningSpec(
        type=kind,  # type: ignore[arg-type]
        metric="val_loss" if mode == "min" else "val_acc",
        mode=mode,  # type: ignore[arg-type]
        n_startup_trials=rng.randint(0, 5),
        n_warmup_steps=rng.randint(0, 4),
        interval_steps=rng.randint(1, 3),
        n_min_trials=rng.randint(1, 3),
        percentile=50.0 if kind == "median" else rng.choice([0.0, 100.0, rng.uniform(0, 100)]),
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["median", "percentile"])
def test_median_and_percentile_decide_as_optunas_pruners(kind: str) -> None:
    """median / percentile prune exactly where MedianPruner / PercentilePruner do."""
    tally = Tally()
    for rng, seed, mode in _streams(kind):
        spec = _step_spec(rng, kind, mode)
        options = {
            "n_startup_trials": spec.n_startup_trials,
            "n_warmup_steps": spec.n_warmup_steps,
            "interval_steps": spec.interval_steps,
            "n_min_trials": spec.n_min_trials,
        }
        if kind == "median":
            pruner = optuna.pruners.MedianPruner(**options)
        else:
            pruner = optuna.pruners.PercentilePruner(spec.percentile, **options)
        replay(
            make_stream(seed, STEP_EPOCHS, mode),
            make_rule(spec, seed=seed),
            OptunaOracle(spec, pruner),
            spec,
            tally,
        )
    _check_tally(tally)


def test_threshold_decides_as_optunas_threshold_pruner() -> None:
    """threshold prunes exactly where ThresholdPruner does."""
    tally = Tally()
    for rng, seed, mode in _streams("threshold"):
        lower = rng.choice([None, rng.uniform(-0.5, 1.0)])
        upper = (
            rng.choice([None, rng.uniform(1.0, 2.5)])
            if lower is not None
            else rng.uniform(1.0, 2.5)
        )
        spec = PruningSpec(
            type="threshold",
            metric="val_loss",
            mode=mode,  # type: ignore[arg-type]
            n_warmup_steps=rng.randint(0, 4),
            interval_steps=rng.randint(1, 3),
            lower=lower,
            upper=upper,
        )
        pruner = optuna.pruners.ThresholdPruner(
            lower=lower,
            upper=upper,
            n_warmup_steps=spec.n_warmup_steps,
            interval_steps=spec.interval_steps,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            replay(
                make_stream(seed, STEP_EPOCHS, mode),
                make_rule(spec, seed=seed),
                OptunaOracle(spec, pruner),
                spec,
                tally,
            )
    _check_tally(tally)
