"""The operator CLI: ``mentorflow …`` (a Flask CLI group, so ``db`` comes from Flask-Migrate).

One module per command group; this module only gathers them.
"""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from mentorflow.app import create_app
from mentorflow.cli.deliveries import deliveries
from mentorflow.cli.demo import demo
from mentorflow.cli.flows import flow
from mentorflow.cli.jobs import export
from mentorflow.cli.keys import key
from mentorflow.cli.legacy import legacy
from mentorflow.cli.orgs import org
from mentorflow.cli.processes import beat, serve, up, worker
from mentorflow.cli.staff import staff


@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    add_version_option=False,
    help="Operate a mentorflow installation.",
)
def main() -> None:
    """Run mentorflow commands."""


for command in (org, key, flow, staff, serve, worker, beat, up, export, deliveries, demo, legacy):
    main.add_command(command)
