"""The original specification's Quick Start script, as written: plain, synchronous code.

    python examples/spec_quickstart/run_experiment.py

runs the experiment in ``configs/`` beside this file into ``./outputs``.  The callbacks
registered on ``Pipeline(env)`` join every run of the experiment.
"""

from pathlib import Path

from expman import (
    CheckpointCallback,
    EarlyStopping,
    Environment,
    Experiment,
    MetricsTracker,
    Pipeline,
)

env_config = {"max_concurrency": 2, "execution": {"timeout": None}}

env = Environment(workspace="outputs", config=env_config)
env.setup_environment()

experiment = Experiment(
    name="spec_quickstart",
    id=1,
    desc="The Quick Start of the specification",
    env=env,
    config_dir_path=Path(__file__).parent / "configs",
)

pipeline = Pipeline(env)
pipeline.register_callback(EarlyStopping(env, patience=5, min_delta_percent=0.1))
pipeline.register_callback(CheckpointCallback(interval=10, env=env))
pipeline.register_callback(MetricsTracker(env))

result = experiment.run()
print(f"{result.name}: {result.status}, {result.counts}, in {result.path}")
