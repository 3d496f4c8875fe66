"""The pruning rules on hand-computed cases: rungs, brackets, reasons, modes, each decision."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from expman.config.pruning import PruningSpec
from expman.pruning import (
    Series,
    Verdict,
    bracket_budgets,
    bracket_of,
    make_rule,
    nanpercentile,
    rung_at,
    rung_epochs,
)

NAN = math.nan
ROOT = Path(__file__).resolve().parents[1]


def asha(**fields: object) -> PruningSpec:
    base = {"type": "asha", "metric": "val_loss", "mode": "min", "reduction_factor": 3}
    return PruningSpec(**{**base, **fields})  # type: ignore[arg-type]


def steps(kind: str, **fields: object) -> PruningSpec:
    base = {"type": kind, "metric": "val_loss", "mode": "min", "n_startup_trials": 0}
    return PruningSpec(**{**base, **fields})  # type: ignore[arg-type]


def at(epochs: int, value: float, state: str = "running") -> Series:
    return Series({epochs: value}, state)  # type: ignore[arg-type]


def rivals(epochs: int, values: list[float], state: str = "running") -> dict[str, Series]:
    return {f"o{i}": at(epochs, v, state) for i, v in enumerate(values)}


class TestRungs:
    def test_rungs_lie_at_grace_times_powers_of_the_factor_below_max_epochs(self) -> None:
        """grace 1, factor 3, max 81: rungs at 1, 3, 9, 27 epochs (81 is the end, not a rung)."""
        assert rung_epochs(asha(max_epochs=81), 0) == (1, 3, 9, 27)
        assert rung_epochs(asha(max_epochs=28), 0) == (1, 3, 9, 27)
        assert rung_epochs(asha(max_epochs=27), 0) == (1, 3, 9)
        assert rung_epochs(asha(grace_period=2, reduction_factor=2, max_epochs=20), 0) == (
            2,
            4,
            8,
            16,
        )

    def test_a_fractional_milestone_is_judged_at_the_first_epoch_reaching_it(self) -> None:
        """Factor 2.5 from grace 2: milestones 2, 5, 12.5, 31.25 are judged at 2, 5, 13, 32."""
        spec = asha(grace_period=2, reduction_factor=2.5)
        assert rung_epochs(spec, 0, up_to=40) == (2, 5, 13, 32)
        assert [rung_at(spec, 0, e) for e in (12, 13, 14)] == [None, 2, None]

    def test_without_max_epochs_rungs_go_on(self) -> None:
        """No max_epochs: rungs without end (a listing needs a bound)."""
        spec = asha()
        assert rung_at(spec, 0, 3**12) == 12
        with pytest.raises(ValueError, match="up_to"):
            rung_epochs(spec, 0)

    def test_bracket_s_starts_at_grace_times_factor_to_the_s(self) -> None:
        """hyperband bracket 1's rungs start a factor later than bracket 0's."""
        spec = asha(type="hyperband", brackets=3, max_epochs=81)
        assert [rung_epochs(spec, b) for b in range(3)] == [(1, 3, 9, 27), (3, 9, 27), (9, 27)]

    def test_due_and_compares_only_at_the_rungs(self) -> None:
        """asha takes a verdict at its rungs only, and reads the others' rung values."""
        rule = make_rule(asha(max_epochs=30), seed=0)
        assert [e for e in range(1, 31) if rule.due("t", e)] == [1, 3, 9, 27]
        assert [rule.compares("t", e) for e in (1, 2, 3)] == ["rung", "none", "rung"]


class TestBrackets:
    def test_budgets_are_optunas_hyperband_budgets(self) -> None:
        """Three brackets at factor 3 get 9, 5 and 3 shares: ceil(n * rf**s / (s + 1))."""
        assert bracket_budgets(asha(type="hyperband", brackets=3)) == (9, 5, 3)
        assert bracket_budgets(asha(type="hyperband", brackets=4, reduction_factor=2)) == (
            8,
            6,
            4,
            4,
        )

    def test_brackets_spread_as_the_budgets_weigh_them(self) -> None:
        """Over 3,000 competitors each bracket's share is its budget's, within 3 points."""
        spec = asha(type="hyperband", brackets=3)
        counts = Counter(bracket_of(spec, 7, f"trial-{i}") for i in range(3000))
        for bracket, budget in enumerate((9, 5, 3)):
            assert abs(counts[bracket] / 3000 - budget / 17) < 0.03, counts

    def test_brackets_depend_on_the_seed(self) -> None:
        """Another experiment seed places the same competitors differently."""
        spec = asha(type="hyperband", brackets=3)
        names = [f"trial-{i}" for i in range(100)]
        assert [bracket_of(spec, 1, n) for n in names] != [bracket_of(spec, 2, n) for n in names]

    def test_brackets_are_the_same_in_every_process(self) -> None:
        """Another process, another PYTHONHASHSEED: the same brackets (no hash(), no global RNG)."""
        code = (
            "import json, random; random.seed(99)\n"
            "from expman.config.pruning import PruningSpec\n"
            "from expman.pruning import bracket_of\n"
            "spec = PruningSpec(type='hyperband', metric='m', mode='min', brackets=3,"
            " reduction_factor=3)\n"
            "print(json.dumps([bracket_of(spec, 5, f't{i}') for i in range(200)]))\n"
        )
        env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        spec = asha(type="hyperband", brackets=3, metric="m")
        assert json.loads(out.stdout) == [bracket_of(spec, 5, f"t{i}") for i in range(200)]

    def test_asha_has_the_one_bracket(self) -> None:
        """asha puts every competitor in bracket 0."""
        assert {bracket_of(asha(), 3, f"t{i}") for i in range(50)} == {0}


class TestRayRule:
    def test_cutoff_is_rays_percentile_of_the_others(self) -> None:
        """Factor 4: the others 1, 2, 3, 4 give cutoff 1.75 (the best quarter continues)."""
        rule = make_rule(asha(reduction_factor=4), seed=0)
        others = rivals(1, [1.0, 2.0, 3.0, 4.0])
        worse = rule.judge("t", 1, at(1, 1.8), others)
        assert (worse.action, worse.rung, worse.value, worse.cutoff, worse.compared) == (
            "prune",
            0,
            1.8,
            1.75,
            4,
        )
        assert rule.judge("t", 1, at(1, 1.7), others).action == "continue"

    def test_the_reason_is_one_sentence(self) -> None:
        """The reason names the rule, rung, epochs, metric, value, cutoff and how many."""
        rule = make_rule(asha(max_epochs=81), seed=0)
        values = [0.2, 0.3, 0.34, 0.351, 0.351, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
        verdict = rule.judge("t", 9, at(9, 0.412), rivals(9, values))
        assert verdict.reason == (
            "asha: rung 2 (9 epochs) val_loss 0.412 worse than cutoff 0.351 of 12 trials"
        )
        runs = make_rule(asha(), seed=0, noun="runs").judge("t", 1, at(1, 2.0), rivals(1, [1.0]))
        assert runs.reason == "asha: rung 0 (1 epoch) val_loss 2 worse than cutoff 1 of 1 run"

    def test_mode_max_keeps_the_high_values(self) -> None:
        """The same values: in min mode the high one is pruned, in max mode the low one."""
        others = rivals(1, [1.0, 2.0, 3.0, 4.0])
        low = make_rule(asha(mode="min"), seed=0)
        high = make_rule(asha(mode="max", metric="val_acc"), seed=0)
        assert low.judge("t", 1, at(1, 3.9), others).action == "prune"
        assert low.judge("t", 1, at(1, 1.1), others).action == "continue"
        assert high.judge("t", 1, at(1, 1.1), others).action == "prune"
        assert high.judge("t", 1, at(1, 3.9), others).action == "continue"

    def test_nothing_to_compare_continues(self) -> None:
        """The first at a rung, a NaN value, or others all NaN: continue (as Ray)."""
        rule = make_rule(asha(), seed=0)
        first = rule.judge("t", 1, at(1, 5.0), {})
        assert (first.action, first.cutoff, first.compared) == ("continue", None, 0)
        assert rule.judge("t", 1, at(1, NAN), rivals(1, [1.0])).action == "continue"
        assert rule.judge("t", 1, at(1, 9.0), rivals(1, [NAN, NAN])).action == "continue"
        # NaN others are ignored by the percentile, not counted.
        assert rule.judge("t", 1, at(1, 9.0), rivals(1, [NAN, 1.0])).compared == 1

    def test_off_rung_and_missing_value_continue(self) -> None:
        """Off a rung, or with no value at it, the verdict is a continue."""
        rule = make_rule(asha(), seed=0)
        assert rule.judge("t", 2, at(2, 9.0), rivals(2, [1.0])) == Verdict(
            "continue", None, 9.0, None, 0, "not a rung"
        )
        assert rule.judge("t", 3, at(1, 9.0), rivals(3, [1.0])).action == "continue"

    def test_the_others_are_read_at_this_rung_only(self) -> None:
        """A value the others had at another epoch does not count."""
        rule = make_rule(asha(), seed=0)
        verdict = rule.judge("t", 3, at(3, 9.0), rivals(1, [1.0, 1.0]))
        assert (verdict.action, verdict.compared) == ("continue", 0)


class TestOptunaRule:
    def test_promotion_within_the_best_len_over_factor(self) -> None:
        """Factor 2, others 1, 2, 3: 2.5 ranks third of four (only two go on); 1.5 second."""
        rule = make_rule(asha(reduction_factor=2, rule="optuna"), seed=0)
        others = rivals(1, [1.0, 2.0, 3.0])
        worse = rule.judge("t", 1, at(1, 2.5), others)
        assert (worse.action, worse.cutoff, worse.compared) == ("prune", 2.0, 4)
        assert worse.reason == "asha: rung 0 (1 epoch) val_loss 2.5 worse than cutoff 2 of 4 trials"
        assert rule.judge("t", 1, at(1, 1.5), others).action == "continue"

    def test_the_first_ones_must_be_the_best_so_far(self) -> None:
        """Fewer than factor competing: only the best value so far goes on (Optuna's rule)."""
        rule = make_rule(asha(reduction_factor=3, rule="optuna"), seed=0)
        assert rule.judge("t", 1, at(1, 5.0), {}).action == "continue"
        assert rule.judge("t", 1, at(1, 5.0), rivals(1, [4.0])).action == "prune"
        assert rule.judge("t", 1, at(1, 3.0), rivals(1, [4.0])).action == "continue"

    def test_nan_is_pruned_and_never_competes(self) -> None:
        """A NaN is pruned at once (as Optuna) and the others' NaNs do not compete."""
        rule = make_rule(asha(reduction_factor=2, rule="optuna"), seed=0)
        verdict = rule.judge("t", 1, at(1, NAN), {})
        assert (verdict.action, verdict.reason) == (
            "prune",
            "asha: rung 0 (1 epoch) val_loss is NaN",
        )
        assert rule.judge("t", 1, at(1, 2.0), rivals(1, [NAN, NAN, 1.0])).compared == 2

    def test_mode_max(self) -> None:
        """In max mode the competitor must be among the highest values."""
        rule = make_rule(asha(reduction_factor=2, rule="optuna", mode="max"), seed=0)
        others = rivals(1, [1.0, 2.0, 3.0])
        assert rule.judge("t", 1, at(1, 2.5), others).action == "continue"
        assert rule.judge("t", 1, at(1, 1.5), others).action == "prune"


class TestHyperband:
    def _names(self, spec: PruningSpec, seed: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for i in range(200):
            out.setdefault(bracket_of(spec, seed, f"t{i}"), []).append(f"t{i}")
        return out

    @pytest.mark.parametrize("rule", ["ray", "optuna"])
    def test_competitors_compete_only_within_their_bracket(self, rule: str) -> None:
        """Others in another bracket with values at this epoch do not count."""
        spec = asha(type="hyperband", brackets=2, max_epochs=81, rule=rule)
        names = self._names(spec, 11)
        me, mate, stranger = names[1][0], names[1][1], names[0][0]
        judge = make_rule(spec, seed=11).judge
        alone = judge(me, 3, at(3, 5.0), {stranger: at(3, 1.0)})
        assert (alone.action, alone.rung) == ("continue", 0)
        assert alone.compared == (0 if rule == "ray" else 1)
        beaten = judge(me, 3, at(3, 5.0), {stranger: at(3, 9.0), mate: at(3, 1.0)})
        assert beaten.action == "prune"
        assert beaten.reason.startswith("hyperband: bracket 1, rung 0 (3 epochs) val_loss 5")

    def test_a_competitors_rungs_are_its_brackets(self) -> None:
        """A competitor is judged at its own bracket's rungs."""
        spec = asha(type="hyperband", brackets=2, max_epochs=81)
        names = self._names(spec, 11)
        rule = make_rule(spec, seed=11)
        assert [e for e in range(1, 81) if rule.due(names[0][0], e)] == [1, 3, 9, 27]
        assert [e for e in range(1, 81) if rule.due(names[1][0], e)] == [3, 9, 27]


class TestMedianAndPercentile:
    def test_best_so_far_against_the_median_of_complete_others(self) -> None:
        """The own best (not the latest) value against the complete others' median at the step."""
        rule = make_rule(steps("median", n_startup_trials=2), seed=0)
        others = rivals(2, [0.6, 0.8], "complete")
        recovering = rule.judge("t", 2, Series({1: 0.5, 2: 0.9}), others)
        assert (recovering.action, recovering.value, recovering.cutoff) == ("continue", 0.5, 0.7)
        worse = rule.judge("t", 2, Series({1: 0.9, 2: 0.95}), others)
        assert (worse.action, worse.value, worse.cutoff, worse.compared) == ("prune", 0.9, 0.7, 2)
        assert worse.reason == (
            "median: after 2 epochs best val_loss 0.9 worse than the median 0.7 of 2 trials"
        )

    def test_only_complete_others_count(self) -> None:
        """Running, pruned and failed others are not read; n_startup_trials counts complete ones."""
        rule = make_rule(steps("median", n_startup_trials=2), seed=0)
        own = Series({1: 0.9})
        mixed = {
            "a": at(1, 0.1, "complete"),
            "b": at(1, 0.1, "running"),
            "c": at(1, 0.1, "pruned"),
            "d": at(1, 0.1, "failed"),
        }
        assert rule.judge("t", 1, own, mixed).action == "continue"
        mixed["b"] = at(1, 0.1, "complete")
        assert rule.judge("t", 1, own, mixed).action == "prune"
        # Even with n_startup_trials 0, at least one complete trial is needed (as Optuna).
        assert make_rule(steps("median"), seed=0).judge("t", 1, own, {}).action == "continue"

    def test_percentile_keeps_the_best_share_in_either_mode(self) -> None:
        """percentile 25: min mode cuts at the 25th percentile, max mode at the 75th."""
        others = rivals(1, [1.0, 2.0, 3.0, 4.0, 5.0], "complete")
        low = make_rule(steps("percentile", percentile=25.0), seed=0)
        verdict = low.judge("t", 1, at(1, 2.5), others)
        assert (verdict.action, verdict.cutoff) == ("prune", 2.0)
        assert verdict.reason == (
            "percentile: after 1 epoch best val_loss 2.5 worse than cutoff 2"
            " (the best 25% of 5 trials)"
        )
        high = make_rule(steps("percentile", percentile=25.0, mode="max", metric="acc"), seed=0)
        assert (high.judge("t", 1, at(1, 3.5), others).cutoff) == 4.0
        assert high.judge("t", 1, at(1, 3.5), others).action == "prune"
        assert high.judge("t", 1, at(1, 4.5), others).action == "continue"

    def test_warm_up_and_interval(self) -> None:
        """n_warmup_steps 2, interval 3: checks after 2, 5, 8 epochs; a verdict every epoch."""
        spec = steps("median", n_warmup_steps=2, interval_steps=3)
        rule = make_rule(spec, seed=0)
        assert all(rule.due("t", e) for e in range(1, 10))
        assert [e for e in range(1, 10) if rule.compares("t", e) == "end"] == [2, 5, 8]
        others = {"a": Series(dict.fromkeys(range(1, 10), 0.1), "complete")}
        curve = dict.fromkeys(range(1, 10), 0.9)
        judged = [
            rule.judge("t", e, Series({k: v for k, v in curve.items() if k <= e}), others)
            for e in range(1, 10)
        ]
        assert [e for e, v in zip(range(1, 10), judged, strict=True) if v.pruned] == [2, 5, 8]
        assert judged[0].reason == "warming up"
        assert judged[2].reason == "between checks"

    def test_the_very_first_report_is_checked_off_interval(self) -> None:
        """Optuna checks the first reported step even off the interval (its step before is -1)."""
        rule = make_rule(steps("median", interval_steps=3), seed=0)
        assert [rule.compares("t", e) for e in (1, 2, 3, 4)] == ["end", "none", "end", "none"]
        others = {"a": at(1, 0.1, "complete")}
        assert rule.judge("t", 1, at(1, 0.9), others).action == "prune"

    def test_a_gap_postpones_the_check_to_the_next_value(self) -> None:
        """interval 2: no value after 2 epochs, so the value after 3 is checked."""
        rule = make_rule(steps("median", interval_steps=2), seed=0)
        others = {"a": Series({2: 0.1, 3: 0.1}, "complete")}
        assert rule.judge("t", 3, Series({1: 0.9, 3: 0.9}), others).action == "prune"
        assert rule.judge("t", 3, Series({1: 0.9, 2: 0.9, 3: 0.9}), others).action == "continue"

    def test_nan_prunes_only_when_every_value_is_nan(self) -> None:
        """A NaN latest value with a finite best so far continues; all NaN is pruned."""
        rule = make_rule(steps("median"), seed=0)
        others = rivals(2, [0.5], "complete")
        assert rule.judge("t", 2, Series({1: 0.1, 2: NAN}), others).action == "continue"
        verdict = rule.judge("t", 2, Series({1: NAN, 2: NAN}), others)
        assert (verdict.action, verdict.reason) == (
            "prune",
            "median: after 2 epochs every val_loss is NaN",
        )

    def test_n_min_trials(self) -> None:
        """Fewer complete others with a value at the step than n_min_trials: continue."""
        rule = make_rule(steps("median", n_min_trials=2), seed=0)
        one = {"a": at(1, 0.1, "complete"), "b": at(2, 0.1, "complete")}
        assert rule.judge("t", 1, at(1, 0.9), one).action == "continue"
        two = {**one, "c": at(1, 0.2, "complete")}
        assert rule.judge("t", 1, at(1, 0.9), two).action == "prune"

    def test_values_past_the_epoch_are_not_read(self) -> None:
        """The own series' later values do not enter its best so far."""
        rule = make_rule(steps("median"), seed=0)
        own = Series({1: 0.9, 2: 0.0})
        assert rule.judge("t", 1, own, rivals(1, [0.5], "complete")).action == "prune"


class TestThreshold:
    def test_outside_the_bounds_or_nan_is_pruned(self) -> None:
        """Below lower, above upper or NaN: pruned, naming the bound."""
        rule = make_rule(steps("threshold", lower=0.1, upper=1.0), seed=0)
        above = rule.judge("t", 3, at(3, 1.5), {})
        assert (above.action, above.cutoff) == ("prune", 1.0)
        assert above.reason == "threshold: after 3 epochs val_loss 1.5 above upper 1"
        below = rule.judge("t", 3, at(3, 0.05), {})
        assert below.reason == "threshold: after 3 epochs val_loss 0.05 below lower 0.1"
        assert (
            rule.judge("t", 3, at(3, NAN), {}).reason == "threshold: after 3 epochs val_loss is NaN"
        )
        assert rule.judge("t", 3, at(3, 0.5), {}).action == "continue"

    def test_reads_no_one_else_and_waits_for_warm_up(self) -> None:
        """threshold compares with no one and prunes from n_warmup_steps epochs on."""
        rule = make_rule(steps("threshold", upper=1.0, n_warmup_steps=3), seed=0)
        assert rule.compares("t", 5) == "none"
        assert rule.judge("t", 2, at(2, 5.0), {}).action == "continue"
        assert rule.judge("t", 3, at(3, 5.0), {}).action == "prune"


def test_make_rule_names_each_type() -> None:
    """make_rule gives the rule the block's type names."""
    specs = {
        "asha": asha(),
        "hyperband": asha(type="hyperband", brackets=2),
        "median": steps("median"),
        "percentile": steps("percentile", percentile=10.0),
        "threshold": steps("threshold", upper=1.0),
    }
    assert {kind: make_rule(spec, seed=0).name for kind, spec in specs.items()} == {
        kind: kind for kind in specs
    }


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy on an all-NaN array
def test_nanpercentile_is_numpys_bit_for_bit() -> None:
    """Random arrays with ties, NaN and infinities: the same float as numpy.nanpercentile."""
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    special = [0.0, -0.0, 1.0, math.inf, -math.inf, NAN]
    for _ in range(5000):
        xs = [
            rng.choice(special)
            if rng.random() < 0.25
            else round(rng.uniform(-5, 5), rng.choice([1, 6]))
            for _ in range(rng.randint(1, 12))
        ]
        q = rng.choice(
            [0.0, 50.0, 100.0, (1 - 1 / 3) * 100, (1 - 1 / 2.5) * 100, rng.uniform(0, 100)]
        )
        with np.errstate(all="ignore"):
            expected = float(np.nanpercentile(np.array(xs, dtype=float), q))
        got = nanpercentile(xs, q)
        assert got == expected or (math.isnan(got) and math.isnan(expected)), (xs, q)
    assert math.isnan(nanpercentile([], 50.0))
