"""``mentorflow deliveries``: the health of side effects, and retries."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from mentorflow.delivery import services as delivery
from mentorflow.delivery.services import delivery_status
from mentorflow.platform.db import begin_write
from mentorflow.platform.extensions import db
from mentorflow.worker import tasks


@click.group()
def deliveries() -> None:
    """Inspect and retry event deliveries."""


@deliveries.command("status")
@with_appcontext
def deliveries_status() -> None:
    """Show pending, delivered and dead deliveries per sink, and the oldest pending age."""
    rows = delivery_status()
    click.echo(f"{'sink':<10} {'pending':>8} {'oldest pending':>15} {'delivered':>10} {'dead':>6}")
    for row in rows:
        oldest = row["oldest_pending_seconds"]
        age = "-" if oldest is None else f"{oldest:.1f}s"
        click.echo(
            f"{row['sink']:<10} {row['pending']:>8} {age:>15} {row['delivered']:>10} "
            f"{row['dead']:>6}"
        )
    if not rows:
        click.echo("(no deliveries yet)")


@deliveries.command("retry")
@click.option("--dead", is_flag=True, help="Also retry dead deliveries.")
@with_appcontext
def deliveries_retry(dead: bool) -> None:
    """Make pending (and with --dead, dead) deliveries due now and wake a worker."""
    begin_write(db.session)
    count = delivery.retry_deliveries(dead=dead)
    # Committed before a worker is woken, so that it finds the deliveries due.
    db.session.commit()
    try:
        tasks.deliver_due_deliveries.apply_async(retry=False)
    except Exception as exc:
        click.echo(f"broker unreachable ({exc}); the beat's sweep will deliver them", err=True)
    click.echo(f"{count} deliveries are due now")
