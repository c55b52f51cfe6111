"""`python -m srlm.orchestration.task STEP --spec JSON`: run one step of a plan, wherever it was sent.

This is the single entry point a Ray job, a Kubernetes pod or a local subprocess runs. It rebuilds the step's
context from the spec's resolved config, calls the step's runner from the step registry (srlm.steps.registry;
evaluate calls srlm.evaluation.suites directly), and ends its output with one `srlm-task-result: {...}` line
holding the output URIs (srlm.orchestration.result).

Exit codes: 0 done; 1 failed (a retry may help: a crash, a lost node, the store unreachable, the process that
started it gone); 3 failed for a reason a retry cannot fix (bad config or data: srlm's ConfigError / DataError),
so orchestrators stop retrying.

Run as a program, a step ends itself when the process that started it exits (`ParentWatch`): the Ray job
supervisor that dies with its head, or the Airflow task process that ran it as a local subprocess in its own
session. Neither takes the step down with it (Ray's supervisor kills only its direct children, and a session
leader's children survive it), and the retry that follows must not run beside an orphan writing the same outputs.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from srlm.errors import ConfigError, DataError, SrlmError
from srlm.orchestration.result import PERMANENT_FAILURE_EXIT_CODE, publish_result
from srlm.orchestration.spec import STEPS, StepSpec
from srlm.steps import registry

log = logging.getLogger(__name__)


def _context(spec: StepSpec, overrides: dict[str, Any] | None = None):
    from srlm.config import apply_overrides, config_from_dict
    from srlm.steps.context import StepContext

    config = config_from_dict(spec.config, f"{spec.step} spec config")
    if overrides:
        config = apply_overrides(config, overrides)
    return StepContext.from_config(config, progress=False)


def _check_model(ctx, spec: StepSpec) -> None:
    """The model iteration t runs on is the registered M_{t-1}, which the spec's model (when given) must be.

    DPO (srlm.steps.dpo) trains from the registry's M_{t-1}; generating and judging with any other model would
    break the self-rewarding loop, so a mismatch is refused before the step does any work.
    """
    from srlm.steps.checkpoints import checkpoint_id, model_from_spec, registered_model

    parent = registered_model(ctx, checkpoint_id(spec.iteration - 1))
    if spec.model and spec.model != parent.label:
        given = model_from_spec(ctx, spec.model)
        if given.fingerprint != parent.fingerprint:
            raise ConfigError(
                f"input model {spec.model} is not the registered {parent.label} ({parent.spec}); iteration "
                f"{spec.iteration} generates with and trains from the registered {parent.label}"
            )


def _runner(name: str) -> Callable[[StepSpec], dict[str, Any]]:
    definition = registry.step(name)

    def run(spec: StepSpec) -> dict[str, Any]:
        from srlm.steps.context import StepCall

        overrides = {definition.model_key: spec.model} if definition.model_key and spec.model else None
        ctx = _context(spec, overrides)
        if definition.iteration and "model" in definition.inputs:
            _check_model(ctx, spec)
        call = StepCall(iteration=spec.iteration, inputs=spec.inputs, options=spec.options, force=spec.force)
        return definition.load_runner()(ctx, call).task_outputs()

    run.__name__ = f"run_{name}"
    run.__doc__ = definition.summary
    return run


# One runner per registered step: rebuild the context from the spec, check the input model, call the step's
# registered runner (srlm.steps.registry), publish its outputs.
RUNNERS: dict[str, Callable[[StepSpec], dict[str, Any]]] = {name: _runner(name) for name in STEPS}


def run_step(spec: StepSpec) -> dict[str, Any]:
    """Run the spec's step in this process and return its outputs (at least {"uri": …})."""
    return RUNNERS[spec.step](spec)


def _read_spec(value: str) -> StepSpec:
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                return StepSpec.from_json(handle.read(), source=path)
        except OSError as exc:
            raise ConfigError(f"--spec {path}: cannot read: {exc.strerror}") from exc
    return StepSpec.from_json(value)


ORPHAN_POLL_S = 1.0
ORPHAN_GRACE_S = 30.0  # after this, an orphaned step that has not unwound is ended without cleanup


def _handle_sigint() -> None:
    """Give SIGINT Python's own handler (KeyboardInterrupt) when it has none, so that `_thread.interrupt_main()`
    reaches the main thread: it does nothing while SIGINT is ignored or at its default, and a process started in the
    background by a non-interactive shell (`cmd &`, as a CI runner or a job supervisor may) inherits it ignored.
    Called from the main thread (signal handlers can be set nowhere else); elsewhere the disposition stays."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


class ParentWatch:
    """Interrupts the main thread (KeyboardInterrupt: `with` blocks close engines and Ray) once this process is
    orphaned, and ends it after `grace_s` if it is still running.

    `stop()` ends the watch before the interpreter shuts down: a daemon thread that wakes during finalization is
    ended with pthread_exit, whose forced unwinding can abort the process ("terminate called without an active
    exception", exit 134) after the step has already succeeded.
    """

    def __init__(self, poll_s: float = ORPHAN_POLL_S, grace_s: float = ORPHAN_GRACE_S, parent: int | None = None) -> None:
        self.orphaned = threading.Event()
        self._stopped = threading.Event()
        self._poll_s = poll_s
        self._grace_s = grace_s
        self._parent = os.getppid() if parent is None else parent  # the process to outlive
        self._thread: threading.Thread | None = None
        if self._parent > 1:  # PID 1 of a container, or started orphaned: no parent to outlive
            _handle_sigint()
            self._thread = threading.Thread(target=self._watch, name="srlm-exit-with-parent", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while os.getppid() == self._parent:
            if self._stopped.wait(self._poll_s):
                return
        self.orphaned.set()
        with contextlib.suppress(OSError):  # the output may have been a pipe to the parent that is gone
            print(
                f"srlm: error: the process that started this step ({self._parent}) exited; stopping",
                file=sys.stderr,
                flush=True,
            )
        _thread.interrupt_main()
        if not self._stopped.wait(self._grace_s):
            os._exit(1)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


def main(argv: list[str] | None = None, *, orphan_guard: bool = False) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srlm.orchestration.task",
        description="Run one orchestrated srlm step from a JSON spec (what the Airflow tasks send to Ray/Kubernetes).",
    )
    parser.add_argument("step", choices=STEPS, help="The step to run; must match the spec's step.")
    parser.add_argument("--spec", required=True, help="The StepSpec as JSON, or @FILE holding it.")
    parser.add_argument("--debug", action="store_true", help="Show tracebacks.")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    watch = ParentWatch() if orphan_guard else None
    try:
        return _run(args, watch)
    finally:
        if watch is not None:
            watch.stop()


def _run(args: argparse.Namespace, watch: ParentWatch | None) -> int:
    try:
        spec = _read_spec(args.spec)
        if spec.step != args.step:
            raise ConfigError(f"the command runs step {args.step!r} but the spec is for {spec.step!r}")
        outputs = run_step(spec)
    except (ConfigError, DataError) as exc:
        if args.debug:
            raise
        print(f"srlm: error (not retryable): {exc}", file=sys.stderr, flush=True)
        return PERMANENT_FAILURE_EXIT_CODE
    except SrlmError as exc:
        if args.debug:
            raise
        print(f"srlm: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        if watch is None or not watch.orphaned.is_set():
            raise
        return 1  # the watcher said why
    publish_result(outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(orphan_guard=True))
