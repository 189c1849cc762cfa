"""The flow engine: answer validation, branching, position and progress."""

from __future__ import annotations

import copy
import math
import pickle
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowgen import flow_documents, invalid_answers, valid_answers
from mentorflow.flows.document import ANSWER_TYPES, DocumentError, load_document
from mentorflow.flows.engine import AnswerError, CompiledFlow, Position, Progress, compile_flow

DEMO = load_document(
    files("mentorflow.flows").joinpath("demo/demo-flow.yaml").read_text(encoding="utf-8")
)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
OPTIONS = [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}, {"value": "c", "label": "C"}]
PHASE_1 = {
    "booking-status": "booked-1-month",
    "day-rate": 450,
    "goal": "Fully booked with custom work",
    "blocker": "Clients balk at deposits",
    "confession": None,
}
PHASE_1_IDS = [f"phase-1-step-{m}" for m in range(1, 6)]


def document_with(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "slug": "unit",
        "title": "Unit",
        "phases": [{"id": "only", "title": "Only", "steps": list(steps)}],
    }


def one_step_flow(**step: Any) -> CompiledFlow:
    step = {"id": "s", "prompt": "Question?", **step}
    if step["type"] in ANSWER_TYPES:
        step.setdefault("key", "answer")
    return CompiledFlow(document_with(step))


def answer_errors(flow: CompiledFlow, answer: Any) -> dict[str, list[str]]:
    with pytest.raises(AnswerError) as caught:
        flow.validate_answer("s", answer)
    return caught.value.errors


@pytest.fixture(scope="module")
def demo() -> CompiledFlow:
    return CompiledFlow(DEMO)


class TestValidAnswers:
    @pytest.mark.parametrize(
        ("step", "answer", "expected"),
        [
            ({"type": "info"}, None, None),
            ({"type": "video", "video_url": "https://example.com/v.mp4"}, None, None),
            ({"type": "single_choice", "options": OPTIONS}, "b", "b"),
            ({"type": "multi_choice", "options": OPTIONS}, ["c", "a"], ["a", "c"]),
            ({"type": "multi_choice", "options": OPTIONS, "required": False}, [], []),
            ({"type": "text"}, "  fully booked \n", "fully booked"),
            ({"type": "text", "required": False}, "   ", None),
            ({"type": "text", "max_length": 3}, " abc ", "abc"),
            ({"type": "long_text"}, "x" * 20000, "x" * 20000),
            ({"type": "number"}, -2.5, -2.5),
            ({"type": "number", "min": 0, "max": 10}, 0, 0),
            ({"type": "number", "min": 0, "max": 10}, 10.0, 10.0),
            ({"type": "scale"}, 7, 7),
            ({"type": "scale", "min": -2, "max": 2}, -2, -2),
            ({"type": "boolean"}, False, False),
            ({"type": "email"}, " Ada@Example.COM ", "Ada@example.com"),
            ({"type": "phone"}, " +44 20 7946-0958 ", "+44 20 7946-0958"),
            (
                {"type": "contact", "fields": ["name", "email"]},
                {"email": "ada@EXAMPLE.com", "name": " Ada "},
                {"name": "Ada", "email": "ada@example.com"},
            ),
            (
                {"type": "contact", "fields": ["phone"]},
                {"phone": "555 0100 22"},
                {"phone": "555 0100 22"},
            ),
        ],
    )
    def test_normalized_value(self, step, answer, expected):
        assert one_step_flow(**step).validate_answer("s", answer) == expected

    @pytest.mark.parametrize("step_type", sorted(ANSWER_TYPES))
    def test_optional_steps_accept_no_answer(self, step_type):
        extras = {
            "single_choice": {"options": OPTIONS},
            "multi_choice": {"options": OPTIONS},
            "contact": {"fields": ["name"]},
        }
        flow = one_step_flow(type=step_type, required=False, **extras.get(step_type, {}))

        assert flow.validate_answer("s", None) is None

    def test_the_answer_is_not_changed(self):
        flow = one_step_flow(type="multi_choice", options=OPTIONS)
        answer = ["c", "a"]

        flow.validate_answer("s", answer)

        assert answer == ["c", "a"]


class TestInvalidAnswers:
    @pytest.mark.parametrize(
        ("step", "answer", "message"),
        [
            ({"type": "info"}, "hello", "this step takes no answer"),
            ({"type": "info"}, "", "this step takes no answer"),
            ({"type": "single_choice", "options": OPTIONS}, "d", "must be one of: a, b, c"),
            ({"type": "single_choice", "options": OPTIONS}, ["a"], "must be one of: a, b, c"),
            ({"type": "single_choice", "options": OPTIONS}, None, "is required"),
            (
                {"type": "multi_choice", "options": OPTIONS},
                "a",
                "must be a list of options from: a, b, c",
            ),
            (
                {"type": "multi_choice", "options": OPTIONS},
                ["a", "z"],
                "must only contain options from: a, b, c",
            ),
            (
                {"type": "multi_choice", "options": OPTIONS},
                ["a", "a"],
                "must not list the same option twice",
            ),
            ({"type": "multi_choice", "options": OPTIONS}, [], "choose at least 1 option"),
            (
                {"type": "multi_choice", "options": OPTIONS, "max_selected": 2},
                ["a", "b", "c"],
                "choose at most 2 options",
            ),
            (
                {"type": "multi_choice", "options": OPTIONS, "min_selected": 2, "max_selected": 2},
                ["a"],
                "choose exactly 2 options",
            ),
            ({"type": "text"}, 42, "must be text"),
            ({"type": "text"}, " \n ", "is required"),
            ({"type": "text"}, "x" * 2001, "must be at most 2000 characters"),
            ({"type": "text"}, "a\x00b", "must not contain NUL characters"),
            ({"type": "long_text"}, "x" * 20001, "must be at most 20000 characters"),
            ({"type": "number"}, True, "must be a number"),
            ({"type": "number"}, "5", "must be a number"),
            ({"type": "number"}, math.nan, "must be a number"),
            ({"type": "number"}, math.inf, "must be a number"),
            ({"type": "number", "min": 0}, -1, "must be at least 0"),
            ({"type": "number", "max": 10.5}, 11, "must be at most 10.5"),
            ({"type": "scale"}, 7.0, "must be a whole number from 1 to 10"),
            ({"type": "scale"}, False, "must be a whole number from 1 to 10"),
            ({"type": "scale"}, 11, "must be between 1 and 10"),
            ({"type": "scale"}, 0, "must be between 1 and 10"),
            ({"type": "boolean"}, "true", "must be true or false"),
            ({"type": "boolean"}, 1, "must be true or false"),
            ({"type": "email"}, "ada", "must be a valid email address"),
            ({"type": "email"}, "ada@localhost", "must be a valid email address"),
            ({"type": "email"}, 5, "must be an email address"),
            ({"type": "email", "required": False}, "", "must be an email address"),
            (
                {"type": "phone"},
                "call me",
                "must be a phone number of 7 to 20 characters: digits, spaces, dashes "
                "and an optional leading +",
            ),
            (
                {"type": "phone"},
                "(555) 123-4567",
                "must be a phone number of 7 to 20 characters: digits, spaces, dashes "
                "and an optional leading +",
            ),
            (
                {"type": "phone"},
                "12345",
                "must be a phone number of 7 to 20 characters: digits, spaces, dashes "
                "and an optional leading +",
            ),
            (
                {"type": "contact", "fields": ["name", "email"]},
                "Ada",
                "must be an object with name, email",
            ),
        ],
    )
    def test_message(self, step, answer, message):
        assert answer_errors(one_step_flow(**step), answer) == {"answer": [message]}

    def test_contact_errors_name_each_field(self):
        flow = one_step_flow(type="contact", fields=["name", "email", "phone"])

        errors = answer_errors(flow, {"name": " ", "email": "nope", "nickname": "Ace"})

        assert errors == {
            "answer.name": ["is required"],
            "answer.email": ["must be a valid email address"],
            "answer.phone": ["is required"],
            "answer.nickname": ["is not a field of this step"],
        }

    def test_contact_name_length(self):
        flow = one_step_flow(type="contact", fields=["name"])

        assert answer_errors(flow, {"name": "A" * 201}) == {
            "answer.name": ["must be at most 200 characters"]
        }

    def test_answer_error_text_and_pickling(self):
        error = AnswerError({"answer.email": ["is required"], "answer.name": ["is required"]})

        assert str(error) == "answer.email: is required; answer.name: is required"
        assert isinstance(error, ValueError)
        assert pickle.loads(pickle.dumps(error)).errors == error.errors

    def test_unknown_step(self, demo):
        with pytest.raises(KeyError):
            demo.validate_answer("nowhere", "x")


def routing_flow(when: dict[str, Any]) -> CompiledFlow:
    return CompiledFlow(
        document_with(
            {"id": "c", "type": "single_choice", "key": "c", "prompt": "C?", "options": OPTIONS},
            {"id": "m", "type": "multi_choice", "key": "m", "prompt": "M?", "options": OPTIONS},
            {"id": "n", "type": "number", "key": "n", "prompt": "N?"},
            {"id": "b", "type": "boolean", "key": "b", "prompt": "B?"},
            {"id": "t", "type": "text", "key": "t", "prompt": "T?", "required": False},
            {"id": "router", "type": "info", "next": [{"when": when, "goto": "target"}]},
            {"id": "skipped", "type": "info"},
            {"id": "target", "type": "info"},
        )
    )


class TestBranching:
    @pytest.mark.parametrize(
        ("when", "answers", "matches"),
        [
            ({"key": "c", "equals": "a"}, {"c": "a"}, True),
            ({"key": "c", "equals": "a"}, {"c": "b"}, False),
            ({"key": "c", "equals": "a"}, {}, False),
            ({"key": "c", "not_equals": "a"}, {"c": "b"}, True),
            ({"key": "c", "not_equals": "a"}, {"c": "a"}, False),
            ({"key": "c", "not_equals": "a"}, {}, False),
            ({"key": "c", "not_equals": "a"}, {"c": None}, False),
            ({"key": "c", "in": ["a", "b"]}, {"c": "b"}, True),
            ({"key": "c", "in": ["a", "b"]}, {"c": "c"}, False),
            ({"key": "m", "equals": "a"}, {"m": ["a", "b"]}, True),
            ({"key": "m", "equals": "a"}, {"m": ["b"]}, False),
            ({"key": "m", "not_equals": "a"}, {"m": ["b", "c"]}, True),
            ({"key": "m", "in": ["a", "c"]}, {"m": ["c"]}, True),
            ({"key": "m", "in": ["a", "c"]}, {"m": []}, False),
            ({"key": "n", "gt": 5}, {"n": 6}, True),
            ({"key": "n", "gt": 5}, {"n": 5}, False),
            ({"key": "n", "gte": 5}, {"n": 5}, True),
            ({"key": "n", "lt": 5}, {"n": 4.5}, True),
            ({"key": "n", "lte": 5}, {"n": 5.0}, True),
            ({"key": "n", "lte": 5}, {"n": 5.5}, False),
            ({"key": "n", "gt": 5}, {"n": "7"}, False),
            ({"key": "n", "gt": 0}, {"n": True}, False),
            ({"key": "n", "equals": 1}, {"n": True}, False),
            ({"key": "n", "equals": 1}, {"n": 1.0}, True),
            ({"key": "b", "equals": False}, {"b": False}, True),
            ({"key": "b", "equals": False}, {"b": 0}, False),
            ({"key": "t", "answered": True}, {"t": "hi"}, True),
            ({"key": "t", "answered": True}, {"t": ""}, False),
            ({"key": "t", "answered": True}, {"t": None}, False),
            ({"key": "t", "answered": True}, {}, False),
            ({"key": "m", "answered": True}, {"m": []}, False),
            ({"key": "b", "answered": True}, {"b": False}, True),
            ({"key": "n", "answered": True}, {"n": 0}, True),
            ({"key": "t", "answered": False}, {}, True),
            ({"key": "t", "answered": False}, {"t": ""}, True),
            ({"key": "t", "answered": False}, {"t": "hi"}, False),
        ],
    )
    def test_operator(self, when, answers, matches):
        expected = "target" if matches else "skipped"

        assert routing_flow(when).next_step_id("router", answers) == expected

    def test_a_rule_without_when_always_applies(self):
        flow = CompiledFlow(
            document_with(
                {
                    "id": "c",
                    "type": "single_choice",
                    "key": "c",
                    "prompt": "C?",
                    "options": OPTIONS,
                    "next": [{"when": {"key": "c", "equals": "b"}, "goto": "detour"}],
                },
                {"id": "jump", "type": "info", "next": [{"goto": "end"}]},
                {"id": "detour", "type": "info"},
                {"id": "end", "type": "info"},
            )
        )

        assert flow.next_step_id("jump", {"c": "a"}) == "end"
        assert flow.next_step_id("c", {"c": "b"}) == "detour"

    def test_the_first_matching_rule_wins(self):
        flow = CompiledFlow(
            document_with(
                {
                    "id": "c",
                    "type": "single_choice",
                    "key": "c",
                    "prompt": "C?",
                    "options": OPTIONS,
                    "next": [
                        {"when": {"key": "c", "in": ["a", "b"]}, "goto": "second"},
                        {"when": {"key": "c", "equals": "a"}, "goto": "third"},
                    ],
                },
                {"id": "first", "type": "info"},
                {"id": "second", "type": "info"},
                {"id": "third", "type": "info"},
            )
        )

        assert flow.next_step_id("c", {"c": "a"}) == "second"
        assert flow.next_step_id("c", {"c": "c"}) == "first"
        assert flow.next_step_id("third", {"c": "a"}) is None

    def test_booked_out_artists_skip_content(self, demo):
        booked_out = {**PHASE_1, "booking-status": "booked-3-months"}

        assert demo.next_step_id("phase-1-step-5", booked_out) == "phase-3-step-1"
        assert demo.next_step_id("phase-1-step-5", PHASE_1) == "phase-2-step-1"
        assert demo.next_step_id("phase-1-step-1", booked_out) == "phase-1-step-2"

    def test_the_answers_are_not_changed(self, demo):
        answers = {**PHASE_1, "booking-status": "booked-3-months"}
        before = copy.deepcopy(answers)

        demo.next_step_id("phase-1-step-5", answers)
        demo.position(answers, "phase-3-step-1")

        assert answers == before

    def test_unknown_step(self, demo):
        with pytest.raises(KeyError):
            demo.next_step_id("nowhere", {})


class TestPosition:
    def test_at_the_start(self, demo):
        assert demo.position({}, "phase-1-step-1") == Position(
            completed_step_ids=[],
            completed_phases=[],
            current_phase="phase-1",
            progress=Progress(completed=0, total=16, percent=0),
        )

    def test_the_current_phase_is_not_completed(self, demo):
        assert demo.position(PHASE_1, "phase-1-step-3") == Position(
            completed_step_ids=["phase-1-step-1", "phase-1-step-2"],
            completed_phases=[],
            current_phase="phase-1",
            progress=Progress(completed=2, total=16, percent=12),
        )

    def test_after_the_first_phase(self, demo):
        assert demo.position(PHASE_1, "phase-2-step-1") == Position(
            completed_step_ids=PHASE_1_IDS,
            completed_phases=["phase-1"],
            current_phase="phase-2",
            progress=Progress(completed=5, total=16, percent=31),
        )

    def test_a_branch_shortens_the_projected_path(self, demo):
        booked_out = {**PHASE_1, "booking-status": "booked-3-months"}

        assert demo.position(booked_out, "phase-3-step-1") == Position(
            completed_step_ids=PHASE_1_IDS,
            completed_phases=["phase-1"],
            current_phase="phase-3",
            progress=Progress(completed=5, total=12, percent=41),
        )
        assert demo.position(booked_out, "phase-1-step-1").progress == Progress(0, 12, 0)

    def test_a_completed_session(self, demo):
        answers = {
            **PHASE_1,
            "booking-status": "booked-3-months",
            "time-on-content": 8,
            "hardest-part": "Filming while I tattoo",
            "content-creator-identity": "yes-reluctantly",
            "last-price-raise": "over-a-year",
            "too-expensive-response": "I offer a smaller piece",
            "pricing-fear": "Losing regulars",
            "contact": {"name": "Rafael", "email": "rafael@example.com"},
        }
        path = PHASE_1_IDS + [f"phase-3-step-{m}" for m in (1, 2, 3)]
        path += [f"phase-4-step-{m}" for m in (1, 2, 3, 4)]

        assert demo.position(answers, None) == Position(
            completed_step_ids=path,
            completed_phases=["phase-1", "phase-3", "phase-4"],
            current_phase=None,
            progress=Progress(completed=12, total=12, percent=100),
        )
        assert demo.steps_on_path(answers, None) == path

    def test_a_current_step_off_the_path_stops_the_walk_before_it(self, demo):
        booked_out = {**PHASE_1, "booking-status": "booked-3-months"}

        position = demo.position(booked_out, "phase-2-step-2")

        assert position.completed_step_ids == PHASE_1_IDS
        assert position.progress == Progress(completed=5, total=15, percent=33)

    def test_unknown_current_step(self, demo):
        with pytest.raises(KeyError):
            demo.position({}, "nowhere")


class TestFlow:
    def test_steps_in_document_order(self, demo):
        assert demo.first_step_id == "phase-1-step-1"
        assert len(demo.step_ids) == 16
        assert demo.step_ids[-1] == "phase-4-step-4"
        assert demo.phase_ids == ("phase-1", "phase-2", "phase-3", "phase-4")

    def test_step_carries_its_phase(self, demo):
        step = demo.step("phase-2-step-3")

        assert step == {
            "id": "phase-2-step-3",
            "type": "boolean",
            "key": "hundred-k-followers",
            "legacy_key": "phase2.hundredKFollowers",
            "prompt": "Would 100k followers fix your bookings?",
            "required": True,
            "phase_id": "phase-2",
            "phase_title": "Content",
        }
        assert demo.phase_of("phase-2-step-3") == "phase-2"

    def test_step_is_a_copy(self, demo):
        demo.step("phase-1-step-1")["options"].clear()

        assert len(demo.step("phase-1-step-1")["options"]) == 4

    def test_unknown_step(self, demo):
        assert demo.has_step("phase-1-step-1")
        assert not demo.has_step("nowhere")
        with pytest.raises(KeyError):
            demo.step("nowhere")
        with pytest.raises(KeyError):
            demo.phase_of("nowhere")

    def test_an_invalid_definition_is_refused(self):
        with pytest.raises(DocumentError):
            CompiledFlow({"slug": "broken"})

    def test_compiled_flows_are_shared_per_definition(self):
        reordered = {name: DEMO[name] for name in reversed(list(DEMO))}

        assert compile_flow(DEMO) is compile_flow(reordered)
        assert compile_flow(DEMO).definition == DEMO


def expected_next(flow: CompiledFlow, step_id: str, answers: dict[str, Any]) -> str | None:
    """Choose the next step the slow, obvious way, as the spec words it."""
    for rule in flow.step(step_id).get("next", []):
        if "when" not in rule or rule_matches(rule["when"], answers):
            return rule["goto"]
    index = flow.step_ids.index(step_id)
    return flow.step_ids[index + 1] if index + 1 < len(flow.step_ids) else None


def rule_matches(when: dict[str, Any], answers: dict[str, Any]) -> bool:
    ((operator, expected),) = [(name, value) for name, value in when.items() if name != "key"]
    value = answers.get(when["key"])
    if operator == "answered":
        return expected == (value not in (None, "", []))
    if value is None:
        return False
    given_values = value if isinstance(value, list) else [value]

    def same(left: Any, right: Any) -> bool:
        return left == right and isinstance(left, bool) is isinstance(right, bool)

    def is_number(item: Any) -> bool:
        return isinstance(item, int | float) and not isinstance(item, bool)

    if operator == "equals":
        return any(same(item, expected) for item in given_values)
    if operator == "not_equals":
        return not any(same(item, expected) for item in given_values)
    if operator == "in":
        return any(same(item, option) for item in given_values for option in expected)
    if not is_number(value):
        return False
    return {
        "gt": value > expected,
        "gte": value >= expected,
        "lt": value < expected,
        "lte": value <= expected,
    }[operator]


class TestGeneratedFlows:
    @PROPERTY_SETTINGS
    @given(flow_documents(), st.data())
    def test_walking_with_valid_answers_completes_the_flow(self, document, data):
        flow = CompiledFlow(document)
        answers: dict[str, Any] = {}
        path: list[str] = []
        step_id = flow.first_step_id
        while step_id is not None:
            assert step_id not in path
            position = flow.position(answers, step_id)
            assert position.completed_step_ids == path
            assert position.current_phase == flow.phase_of(step_id)
            earlier = flow.phase_ids[: flow.phase_ids.index(position.current_phase)]
            visited = {flow.phase_of(done) for done in path}
            assert position.completed_phases == [p for p in earlier if p in visited]
            assert position.progress.completed == len(path) < position.progress.total
            assert position.progress.percent < 100

            step = flow.step(step_id)
            answer = data.draw(valid_answers(step), label=step_id)
            shown = repr(answer)
            value = flow.validate_answer(step_id, answer)
            assert repr(answer) == shown
            if step["type"] in ANSWER_TYPES:
                answers[step["key"]] = value
            path.append(step_id)

            snapshot = copy.deepcopy(answers)
            next_id = flow.next_step_id(step_id, answers)
            assert answers == snapshot
            assert next_id == expected_next(flow, step_id, answers)
            assert next_id is None or flow.step_ids.index(next_id) > flow.step_ids.index(step_id)
            step_id = next_id

        final = flow.position(answers, None)
        assert final.completed_step_ids == path
        assert final.current_phase is None
        assert final.progress == Progress(completed=len(path), total=len(path), percent=100)
        visited = {flow.phase_of(step_id) for step_id in path}
        assert final.completed_phases == [p for p in flow.phase_ids if p in visited]
        # Rules only read earlier keys, so later answers never reroute the way to a step.
        for index, step_id in enumerate(path):
            assert flow.steps_on_path(answers, step_id) == path[:index]

    @PROPERTY_SETTINGS
    @given(flow_documents(), st.data())
    def test_invalid_answers_are_rejected(self, document, data):
        flow = CompiledFlow(document)
        step_id = data.draw(st.sampled_from(flow.step_ids), label="step")
        answer = data.draw(invalid_answers(flow.step(step_id)), label="answer")
        shown = repr(answer)

        with pytest.raises(AnswerError) as caught:
            flow.validate_answer(step_id, answer)

        assert repr(answer) == shown
        assert caught.value.errors
        assert all(
            (name == "answer" or name.startswith("answer.")) and messages
            for name, messages in caught.value.errors.items()
        )
