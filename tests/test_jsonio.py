"""JSON through orjson: the same documents as the standard library, and nothing refused."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from flask.json.provider import DefaultJSONProvider

from mentorflow.app import create_app
from mentorflow.platform import jsonio


def test_responses_read_as_before(tmp_path):
    app = create_app({"INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "x"})

    @dataclasses.dataclass
    class Point:
        x: int

    value = {
        "b": 1,
        "a": [1.5, None, "é"],
        "when": datetime(2026, 1, 2, tzinfo=UTC),
        "point": Point(2),
    }
    with app.app_context():
        encoded = app.json.dumps(value)
        standard = DefaultJSONProvider(app).dumps(value)
    assert json.loads(encoded) == json.loads(standard)
    # Sorted keys and Flask's HTTP date for datetimes, as Flask's own provider writes them.
    assert list(json.loads(encoded)) == ["a", "b", "point", "when"]
    assert json.loads(encoded)["when"] == "Fri, 02 Jan 2026 00:00:00 GMT"


def test_integers_beyond_64_bits_still_encode():
    # orjson refuses them; a learner's answer of 10**30 must not become a 500.
    huge = {"answer": 10**30, 1: "one"}
    assert json.loads(jsonio.dumps(huge)) == {"answer": 10**30, "1": "one"}


def test_a_huge_number_answer_is_stored_and_read_back_exactly(ctx, create_org, learner):
    from mentorflow.flows import authoring
    from mentorflow.flows.models import LearnerSession
    from mentorflow.platform.extensions import db

    keys = create_org("huge-numbers")
    flow, _ = authoring.save_draft(
        keys.org,
        {
            "slug": "count",
            "title": "Count",
            "phases": [
                {
                    "id": "p",
                    "title": "P",
                    "steps": [{"id": "n", "key": "n", "prompt": "How many?", "type": "number"}],
                },
            ],
        },
    )
    authoring.publish_version(flow)
    db.session.commit()
    walker = learner(keys)
    walker.start("count")
    answered = walker.answer("n", 10**30)
    assert answered.status_code == 200, answered.json
    assert answered.json["session"]["answers"] == {"n": 10**30}
    db.session.expire_all()
    assert db.session.get(LearnerSession, walker.session_id).answers == {"n": 10**30}
    assert walker.get().json["session"]["answers"] == {"n": 10**30}
