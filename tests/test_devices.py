"""Devices: the pool of GPU ids and CPUs that local runs lease, and its plan-time checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import expman
from expman.executors.devices import ResourcePool, detect_devices, resource_problem


class TestResourcePool:
    def test_fractions_pack_onto_the_fullest_device(self) -> None:
        """Two halves share one device; a third half goes to the other one."""
        pool = ResourcePool(["0", "1"], cpus=4)
        first, second, third = (pool.try_lease(gpus=0.5) for _ in range(3))
        assert first is not None
        assert second is not None
        assert third is not None
        assert first.devices == second.devices == ("0",)
        assert third.devices == ("1",)
        assert pool.try_lease(gpus=1) is None
        assert pool.try_lease(gpus=0.5) is not None

    def test_whole_gpus_take_free_devices_only(self) -> None:
        """An integer request takes whole devices nobody holds any share of."""
        pool = ResourcePool(["0", "1", "2"], cpus=4)
        quarter = pool.try_lease(gpus=0.25)
        assert quarter is not None
        pair = pool.try_lease(gpus=2)
        assert pair is not None
        assert set(pair.devices) == {"1", "2"}
        assert pair.cuda_visible_devices == "1,2"
        assert pool.try_lease(gpus=1) is None
        pool.release(quarter)
        assert pool.try_lease(gpus=1) is not None

    def test_cpus_count_against_a_budget(self) -> None:
        """Declared CPUs are a budget: a request that does not fit waits for a release."""
        pool = ResourcePool([], cpus=2)
        one = pool.try_lease(cpus=1.5)
        assert one is not None
        assert pool.try_lease(cpus=1) is None
        assert pool.try_lease(cpus=0.5) is not None
        assert pool.statistics().cpus_leased == 2.0

    async def test_a_waiting_request_gets_the_released_device(self) -> None:
        """acquire() waits while nothing fits and returns once a lease is released."""
        pool = ResourcePool(["7"], cpus=1)
        held = await pool.acquire(gpus=1)
        got: list[tuple[str, ...]] = []

        async def wait_for_device() -> None:
            got.append((await pool.acquire(gpus=1)).devices)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_device)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            assert pool.statistics().waiting == 1
            pool.release(held)
        assert got == [("7",)]

    def test_fractions_add_up_exactly(self) -> None:
        """Ten tenths fill one device exactly (no floating-point leftovers)."""
        pool = ResourcePool(["0"], cpus=1)
        leases = [pool.try_lease(gpus=0.1) for _ in range(10)]
        assert all(lease is not None for lease in leases)
        assert pool.try_lease(gpus=0.1) is None
        assert pool.statistics().devices == {"0": 1.0}


def test_devices_come_from_config_then_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Configured ids win; else CUDA_VISIBLE_DEVICES (where -1 hides every device)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert detect_devices(["a"]) == ("a",)
    assert detect_devices() == ("2", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert detect_devices() == ()


def test_resource_problem_names_the_key() -> None:
    """More GPUs or CPUs than the machine has is a problem with the key that asked."""
    assert resource_problem({"gpus": 2}, ["0"]) is not None
    assert resource_problem({"gpus": 0.5}, [])[0] == "gpus"  # type: ignore[index]
    assert resource_problem({"cpus": 64}, [], cpus=8)[0] == "cpus"  # type: ignore[index]
    assert resource_problem({"gpus": 1, "cpus": 2}, ["0"], cpus=8) is None


async def test_asking_for_more_gpus_than_exist_is_a_config_error(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A trial asking for 3 GPUs on a 2-GPU machine is refused before anything runs."""
    root = make_experiment(
        trials=[
            {"name": "ok", "id": 1},
            {"name": "greedy", "id": 2, "resources": {"gpus": 3}},
        ],
        env={"devices": ["0", "1"]},
    )
    with pytest.raises(expman.ConfigError) as caught:
        await expman.run_experiment(root, workspace=workspace)
    message = str(caught.value)
    assert "trials.yaml" in message
    assert "[1].resources.gpus" in message
    assert "asks for 3 GPU(s) but 2 are available (0, 1)" in message
    assert not workspace.exists()


def test_validate_names_the_trial_that_asks_for_too_many_gpus(
    make_experiment: Callable[..., Path],
) -> None:
    """`expman validate` reports an impossible GPU request as a config error, exit code 2."""
    from .conftest import run_cli

    root = make_experiment(
        trials=[{"name": "greedy", "id": 1, "resources": {"gpus": 1}}],
        env={"devices": []},
    )
    done = run_cli("validate", str(root))
    assert done.returncode == 2
    assert "trials.yaml" in done.stderr
    assert "[0].resources.gpus" in done.stderr
    assert "Traceback" not in done.stderr
