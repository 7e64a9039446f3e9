"""Tell Prefect that new data is available: `python -m flows.notify [--dataset NAME]`.

Emits the `gan.dataset.available` event; the `nightly` deployment's trigger
(prefect.yaml) starts a run, and DVC retrains only what the new data affects.
"""

from __future__ import annotations

import argparse

from prefect.events import emit_event
from prefect.events.clients import get_events_client  # noqa: F401  (ensures the events client is configured)
from prefect.events.worker import EventsWorker

from gan.config import load_params


def notify(dataset: str, note: str = "") -> str:
    event = emit_event(
        "gan.dataset.available",
        resource={"prefect.resource.id": f"gan.dataset.{dataset}", "prefect.resource.name": dataset},
        payload={"dataset": dataset, "note": note},
    )
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
