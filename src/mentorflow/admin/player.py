"""The player: a small page that walks a published flow through the public learner API."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("player", __name__, url_prefix="/play")
