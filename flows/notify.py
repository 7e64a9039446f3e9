"""Tell Prefect that new data is available: `python -m flows.notify [--dataset NAME]`.

Emits the `gan.dataset.available` event; the `nightly` deployment's trigger
(prefect.yaml) starts a run, and DVC retrains only what the new data affects.

The project's two events, named here and nowhere else in the code (tests check prefect.yaml):

- DATASET_AVAILABLE: someone says new data is upstream. The deployment's trigger expects it.
- DATASET_CHANGED: the flow's download produced different bytes than the previous one. Not a
  trigger: the run that emits it retrains on the new data already; triggering on it would only
  queue a second run with nothing to do. It is for whoever else wants to know (other automations).
"""

from __future__ import annotations

import argparse

from prefect.events import emit_event
from prefect.events.clients import get_events_client  # noqa: F401  (ensures the events client is configured)
from prefect.events.worker import EventsWorker

from gan.core.config import load_params

DATASET_AVAILABLE = "gan.dataset.available"
DATASET_CHANGED = "gan.dataset.changed"


def dataset_resource(dataset: str) -> dict[str, str]:
    """The resource both events are about; the trigger matches `gan.dataset.*`."""
    return {"prefect.resource.id": f"gan.dataset.{dataset}", "prefect.resource.name": dataset}


def notify(dataset: str, note: str = "") -> str:
    payload = {"dataset": dataset, "note": note}
    event = emit_event(DATASET_AVAILABLE, resource=dataset_resource(dataset), payload=payload)
    EventsWorker.drain_all()  # send before the process exits
    if event is None:
        raise RuntimeError("event not sent: is PREFECT_API_URL set to a running Prefect server?")
    return str(event.id)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=None, help="default: data.dataset from params.yaml")
    ap.add_argument("--note", default="", help="free text carried in the event payload")
    args = ap.parse_args(argv)
    print(notify(args.dataset or load_params().data.dataset, args.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
