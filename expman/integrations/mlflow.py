"""MLflow: an experiment per expman experiment, a parent run per trial, a child per repeat.

Only the explicit :class:`mlflow.MlflowClient` is used (never the thread-local
fluent API, ``mlflow.start_run``), so the runs of a sweep cannot cross and the
user's own ``mlflow.active_run()`` stays theirs.

* **Identity.**  The journal keeps each repeat's child run id (``Binding.external``);
  a resumed run is opened by it.  Parents (and children the journal never heard
  of: a crash between ``create_run`` and the journal) are found again by tag, once
  per session, in the runs of this expman experiment (``expman.instance``, a hash
  of the experiment's folder: another workspace of the same name gets runs of its
  own).
* **Exactly once.**  MLflow cannot delete a point.  With ``export: checkpointed``
  the driver holds the points until a checkpoint or the run's end makes them
  final, and a reopened run first reads what MLflow already has from ``rewind`` on:
  a (metric, step) it holds is not sent again.  With ``export: live`` points go at
  once; a rewound run is tagged ``expman.resumed_from_epoch`` and the epochs it
  trains again are logged again (the later ones, by timestamp, are the latest).
* **Failing fast.**  MLflow's client retries a refused HTTP request for minutes
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7, doubling from 2 s) in whatever thread
  calls it; the driver retries with its own back-off, so this client's requests
  are made once, with :data:`REQUEST_TIMEOUT`, without touching the process's
  environment (other MLflow code keeps its settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking._tracking_service.client import TrackingServiceClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import http_request, verify_rest_response
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from expman.config import IntegrationSpec
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point, Refused
from expman.status import RunStatus

log = structlog.get_logger("expman.integrations")

# MLflow's notes of a new sqlite store ("Creating initial MLflow database tables...",
# alembic's migrations) are not for the terminal, where the runs' display is.
for _name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)

#: Seconds one HTTP request to a tracking server may take (connect and read).
REQUEST_TIMEOUT = 10
#: MLflow's run status for each way a run ends.
STATUSES = {
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.STOPPED: "FINISHED",
    RunStatus.PRUNED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
}
#: Error codes of requests that will never succeed as sent (their points are lost).
_REFUSED = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST"}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class MlflowExporter(Exporter):
    """The ``mlflow`` integration (see the module's docstring)."""

    def __init__(self, spec: IntegrationSpec, context: ExportContext) -> None:
        super().__init__(spec, context)
        options = spec.options
        self.tracking_uri = tracking_uri(str(options["tracking_uri"]), context.workspace)
        self.experiment_name = str(options["experiment"])
        self.holds_until_final = options["export"] == "checkpointed"
        self.tags: dict[str, str] = {str(k): str(v) for k, v in dict(options["tags"]).items()}
        #: This expman experiment's runs among the MLflow experiment's (its folder's hash).
        self.instance = hashlib.sha256(str(context.root.resolve()).encode()).hexdigest()[:16]
        # Built in the worker thread on first use (a sqlite store migrates its schema).
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        #: Trial name -> parent run id; (trial, repeat) -> child run id (this session's).
        self._parents: dict[str, str] = {}
        #: Each parent's status in MLflow, and how each trial's repeats ended there.
        self._parent_status: dict[str, str] = {}
        self._ended: dict[str, dict[int, str]] = {}
        self._children: dict[tuple[str, int], str] = {}
        self._found = False  # the experiment's runs were searched (since a create failed)
        #: Runs whose params are not known to be in MLflow (created, or found without).
        self._unlogged: set[str] = set()
        self._created: set[str] = set()  # this session's new runs
        #: (metric, step) MLflow already holds from a reopened run's rewind on.
        self._present: dict[tuple[str, int], set[tuple[str, int]]] = {}

    # -- the contract ----------------------------------------------------------------

    def open(self, run: ExportRun, *, external: str | None, rewind: int) -> Binding:
        client = self._connect()
        parent = self._parent(run)
        run_id = external or self._children.get(run.key) or self._find_child(run)
        if run_id is None:
            run_id = self._create_child(run, parent)
        # One this session made (an open retried after a failure) holds nothing before.
        existed = run_id not in self._created
        if existed:
            self._call(lambda: client.update_run(run_id, status="RUNNING"))
        self._children[run.key] = run_id
        for created in (parent, run_id):
            if created in self._unlogged:
                self._log_params(created, run)
        self._ended.setdefault(run.trial, {}).pop(run.repeat, None)
        if self._parent_status.get(run.trial) != "RUNNING":  # a trial that ended before
            self._call(lambda: client.update_run(parent, status="RUNNING"))
            self._parent_status[run.trial] = "RUNNING"
        if existed:
            if self.holds_until_final:
                self._present[run.key] = self._held_from(run_id, rewind)
            else:
                tag = RunTag("expman.resumed_from_epoch", str(rewind))
                self._call(lambda: client.log_batch(run_id, tags=[tag]))
        return Binding(run_id, f"{self.tracking_uri}#{self._experiment_id}/{run_id}")

    def write(self, run: ExportRun, points: Sequence[Point]) -> None:
        client = self._connect()
        run_id = self._children[run.key]
        present = self._present.get(run.key, set())
        metrics = [
            Metric(name, value, int(p.time * 1000), p.epoch)
            for p in points
            for name, value in p.metrics.items()
            if (name, p.epoch) not in present
        ]
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self._call(lambda chunk=chunk: client.log_batch(run_id, metrics=chunk))

    def finish(self, run: ExportRun, status: RunStatus, reason: str | None) -> None:
        client = self._connect()
        run_id = self._children[run.key]
        if status is RunStatus.STOPPED or status is RunStatus.PRUNED:
            # FINISHED says the rest; a tag says why it stopped early (one request less).
            tags = [RunTag("expman.status", str(status))]
            tags.append(RunTag(f"expman.{status}", _clip(reason or str(status))))
            self._call(lambda: client.log_batch(run_id, tags=tags))
        ended = STATUSES.get(status, "FINISHED")
        self._call(lambda: client.set_terminated(run_id, ended))
        self._present.pop(run.key, None)
        self._ended.setdefault(run.trial, {})[run.repeat] = ended
        self._finish_parent(run)

    def close(self) -> None:
        self._client = None

    # -- the MLflow side ----------------------------------------------------------------

    def _connect(self) -> MlflowClient:
        if self._client is None:
            if self.tracking_uri.startswith("sqlite:///"):
                _create_sqlite(Path(self.tracking_uri[len("sqlite:///") :]))
            client = _client(self.tracking_uri)
            self._experiment_id = self._experiment(client)
            self._client = client
        return self._client

    def _experiment(self, client: MlflowClient) -> str:
        name = self.experiment_name
        found = self._call(lambda: client.get_experiment_by_name(name))
        if found is None:
            try:
                return str(client.create_experiment(name, artifact_location=self._artifacts()))
            except MlflowException as exc:  # created meanwhile by someone else?
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self._call(lambda: client.get_experiment_by_name(name))
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise Refused(
                f"the MLflow experiment {name!r} is deleted; restore it, or name another"
                " with the integration's experiment: key"
            )
        return str(found.experiment_id)

    def _artifacts(self) -> str | None:
        """Beside a local store, its runs' artifacts (else MLflow's ./mlruns of the cwd)."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        return None  # a server's (or a file store's) own default

    def _search_once(self) -> None:
        """This experiment's parents and children in MLflow (once a session)."""
        if self._found:
            return
        assert self._client is not None
        client, token = self._client, None
        query = f"tags.`expman.instance` = '{self.instance}'"
        while True:
            page = self._call(
                lambda token=token: client.search_runs(
                    [self._experiment_id], query, max_results=1000, page_token=token
                )
            )
            for found in page:
                tags = found.data.tags
                trial = tags.get("expman.trial")
                if trial is None:
                    continue
                status = str(found.info.status)
                if not found.data.params:  # a crash (or a cut connection) came between
                    self._unlogged.add(found.info.run_id)
                if tags.get("expman.role") == "trial":
                    self._parents.setdefault(trial, found.info.run_id)
                    self._parent_status.setdefault(trial, status)
                elif tags.get("expman.repeat", "").isdigit():
                    repeat = int(tags["expman.repeat"])
                    self._children.setdefault((trial, repeat), found.info.run_id)
                    if status not in ("RUNNING", "SCHEDULED"):
                        self._ended.setdefault(trial, {})[repeat] = status
            token = page.token
            if not token:
                break
        self._found = True

    def _parent(self, run: ExportRun) -> str:
        self._search_once()
        parent = self._parents.get(run.trial)
        if parent is None:
            tags = {**self._identity(run), "expman.role": "trial"}
            parent = self._create(run, run.trial, tags)
            self._parents[run.trial] = parent
            self._parent_status[run.trial] = "RUNNING"
        return parent

    def _find_child(self, run: ExportRun) -> str | None:
        self._search_once()
        return self._children.get(run.key)

    def _create_child(self, run: ExportRun, parent: str) -> str:
        tags = {
            **self._identity(run),
            "mlflow.parentRunId": parent,
            "expman.role": "run",
            "expman.repeat": str(run.repeat),
            "expman.seed": str(run.seed),
            "expman.config_hash": run.config_hash,
        }
        return self._create(run, run.label, tags)

    def _identity(self, run: ExportRun) -> dict[str, str]:
        return {
            **self.tags,
            "expman.experiment": self.context.experiment,
            "expman.instance": self.instance,
            "expman.trial": run.trial,
            "expman.trial_id": str(run.trial_id),
        }

    def _create(self, run: ExportRun, name: str, tags: Mapping[str, str]) -> str:
        """A run named ``name`` with ``tags`` (its params follow: :meth:`_log_params`)."""
        client = self._client
        assert client is not None
        extra = dict(tags)
        truncated = flat_params(run.settings)[1]
        if truncated:
            extra["expman.truncated_params"] = _clip(",".join(truncated))
        # The identifying tags go with the creation: a crash never leaves a run unfindable.
        try:
            created = self._call(
                lambda: client.create_run(
                    self._experiment_id,
                    start_time=int(time.time() * 1000),
                    tags=extra,
                    run_name=name,
                )
            )
        except Exception:
            # The server may have created it and lost the answer: search before a retry.
            self._found = False
            raise
        run_id = str(created.info.run_id)
        self._unlogged.add(run_id)
        self._created.add(run_id)
        return run_id

    def _log_params(self, run_id: str, run: ExportRun) -> None:
        """The trial's settings as ``run_id``'s params."""
        client = self._client
        assert client is not None
        entries = [Param(k, v) for k, v in flat_params(run.settings)[0].items()]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self._call(lambda chunk=chunk: client.log_batch(run_id, params=chunk))
        self._unlogged.discard(run_id)

    def _held_from(self, run_id: str, rewind: int) -> set[tuple[str, int]]:
        """The (metric, step) pairs MLflow holds of ``run_id`` at steps ``>= rewind``."""
        client = self._client
        assert client is not None
        found = self._call(lambda: client.get_run(run_id))
        held: set[tuple[str, int]] = set()
        for name in found.data.metrics:
            history = self._call(lambda name=name: client.get_metric_history(run_id, name))
            held.update((name, m.step) for m in history if m.step >= rewind)
        return held

    def _finish_parent(self, run: ExportRun) -> None:
        """Once every repeat of the trial has ended in MLflow, so has the trial's parent."""
        client = self._client
        parent = self._parents.get(run.trial)
        ended = self._ended.get(run.trial, {})
        if client is None or parent is None or len(ended) < run.repeats:
            return
        statuses = set(ended.values())
        status = next((s for s in ("FAILED", "KILLED") if s in statuses), "FINISHED")
        self._call(lambda: client.set_terminated(parent, status))
        self._parent_status[run.trial] = status

    @staticmethod
    def _call(fn: Any) -> Any:
        """``fn()``; a request MLflow refuses as invalid is :class:`Refused` (not retried)."""
        try:
            return fn()
        except RestException as exc:
            if exc.error_code in _REFUSED:
                raise Refused(f"MLflow refused it: {exc}") from exc
            raise
        except MlflowException as exc:
            if exc.error_code in _REFUSED:
                raise Refused(f"MLflow refused it: {exc}") from exc
            raise


def tracking_uri(uri: str, workspace: Path) -> str:
    """``uri`` with a relative path made relative to ``workspace`` (http(s) as it is).

    ``sqlite:///mlflow.db`` is ``<workspace>/mlflow.db``; ``mlruns`` and
    ``file:mlruns`` are ``<workspace>/mlruns``.
    """
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path and not path.startswith("/"):
            target = workspace.resolve() / path
            target.parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{target}"
        return uri
    if uri.startswith("file:"):
        path = uri[len("file:") :]
        if path.startswith("//"):
            return uri
        return (workspace.resolve() / path).as_uri() if not path.startswith("/") else uri
    if not _SCHEME.match(uri):
        return (workspace.resolve() / uri).as_uri() if not uri.startswith("/") else uri
    return uri


def flat_params(settings: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Settings as MLflow params: dotted keys, ``str`` values clipped to MLflow's limit.

    Returns the params and the keys whose values were clipped.
    """
    params: dict[str, str] = {}
    truncated: list[str] = []
    for key, value in _flatten(settings, ""):
        text = str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[:MAX_PARAM_VAL_LENGTH]
            truncated.append(key)
        params[key] = text
    return params, truncated


def _flatten(value: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            yield from _flatten(item, name + ".")
        else:
            yield name, item


def _clip(text: str) -> str:
    return text[:MAX_TAG_VAL_LENGTH]


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- a client that fails fast over HTTP --------------------------------------------------


def _create_sqlite(path: Path) -> None:
    """A new sqlite store, its schema made whole before it takes its name.

    MLflow creates the schema of a new file in several transactions (seconds); a kill
    in between would leave a file it refuses for good.  Made under a temporary name
    and renamed, the store is either absent (made again next time) or complete.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # a killed session's
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staged.unlink(missing_ok=True)
    MlflowClient(f"sqlite:///{staged}").search_experiments(max_results=1)  # the schema
    try:
        os.link(staged, path)  # takes the name only if it is free: another may have won
    except FileExistsError:
        pass
    except OSError:  # no hard links on this filesystem: a rename, if still free
        if not path.exists():
            os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _client(uri: str) -> MlflowClient:
    """An MlflowClient for ``uri``; over http(s), one whose requests are never retried."""
    client = MlflowClient(uri)
    if uri.startswith(("http://", "https://")):
        try:
            client._tracking_client = _FailFastTracking(uri)
        except (AttributeError, TypeError) as exc:  # MLflow's insides moved
            log.warning("mlflow_retries_not_disabled", error=repr(exc))
    return client


class _FailFastRestStore(RestStore):
    """MLflow's REST store, each request made once with :data:`REQUEST_TIMEOUT`.

    MLflow's own ``_call_endpoint`` reads the retry policy from the process's
    environment; this one passes it per request, as MLflow does for ``/version``.
    """

    def _call_endpoint(
        self,
        api: Any,
        json_body: Any = None,
        endpoint: Any = None,
        retry_timeout_seconds: Any = None,
        response_proto: Any = None,
    ) -> Any:
        info = self._V3_METHOD_TO_INFO if api in self._V3_APIS else self._METHOD_TO_INFO
        self._validate_workspace_support_if_specified()
        path, method = info[api]
        path = endpoint or path
        proto = response_proto or api.Response()
        body = json.loads(json_body) if json_body is not None else None
        kwargs: dict[str, Any] = {"params": body} if method == "GET" else {"json": body}
        response = http_request(  # type: ignore[no-untyped-call]
            self.get_host_creds(),
            path,
            method,
            max_retries=0,
            backoff_factor=0,
            timeout=REQUEST_TIMEOUT,
            **kwargs,
        )
        response = verify_rest_response(response, path)
        if response.status_code == 204:
            return proto
        parse_dict(js_dict=json.loads(response.text), message=proto)  # type: ignore[no-untyped-call]
        return proto


class _FailFastTracking(TrackingServiceClient):
    """MLflow's tracking client over :class:`_FailFastRestStore`, quiet on stdout."""

    def __init__(self, uri: str) -> None:
        self._store = _FailFastRestStore(partial(get_default_host_creds, uri))  # type: ignore[no-untyped-call]
        super().__init__(uri)  # type: ignore[no-untyped-call]

    @property
    def store(self) -> RestStore:
        return self._store

    def _log_url(self, run_id: str) -> None:
        """Nothing: MLflow prints a run's URL to stdout when it ends, and stdout is the
        user's (``expman run --json`` writes only JSON there)."""
