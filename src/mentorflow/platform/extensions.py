"""Extensions, created unbound and bound to the app in ``create_app``."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from mentorflow.platform.db import Base
from mentorflow.platform.openapi import DocumentedApi

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = DocumentedApi()
