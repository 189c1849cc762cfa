"""Celery entry point: ``celery -A mentorflow.worker.celery_app worker|beat``."""

from mentorflow.app import create_app

flask_app = create_app()
app = flask_app.extensions["celery"]
