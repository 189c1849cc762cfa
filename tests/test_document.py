"""Flow documents: parsing, validation with field paths, dumping and checksums."""

from __future__ import annotations

import copy
import json
import pickle
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from flowgen import flow_documents
from mentorflow.flows.document import (
    STEP_TYPES,
    DocumentError,
    FieldError,
    checksum,
    dump_document,
    load_document,
    parse_document,
    validate_document,
)

DEMO_TEXT = files("mentorflow.flows").joinpath("demo/demo-flow.yaml").read_text(encoding="utf-8")
DEMO = load_document(DEMO_TEXT)
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def base_document() -> dict[str, Any]:
    return {
        "slug": "check-up",
        "title": "Check-up",
        "phases": [
            {
                "id": "one",
                "title": "One",
                "steps": [
                    {
                        "id": "color",
                        "type": "single_choice",
                        "key": "color",
                        "prompt": "Pick a color",
                        "options": [
                            {"value": "red", "label": "Red"},
                            {"value": "blue", "label": "Blue"},
                        ],
                    },
                ],
            },
            {
                "id": "two",
                "title": "Two",
                "steps": [
                    {"id": "why", "type": "text", "key": "why", "prompt": "Why?"},
                    {"id": "done", "type": "info", "prompt": "Thanks!"},
                ],
            },
        ],
    }


def step_at(document: dict[str, Any], phase: int, step: int) -> dict[str, Any]:
    return document["phases"][phase]["steps"][step]


def errors_of(document: Any) -> list[str]:
    with pytest.raises(DocumentError) as caught:
        validate_document(document)
    return [str(error) for error in caught.value.errors]


def reorder_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: reorder_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reorder_keys(item) for item in value]
    return value


class TestDemoFlow:
    def test_it_validates(self):
        definition = load_document(DEMO_TEXT)

        assert definition["slug"] == "rafael-tats"
        assert definition["title"] == "Pricing for tattoo artists"
        assert [phase["title"] for phase in definition["phases"]] == [
            "Your situation",
            "Content",
            "Time",
            "Pricing",
        ]

    def test_step_ids_follow_the_phase_step_convention(self):
        definition = copy.deepcopy(DEMO)

        for n, phase in enumerate(definition["phases"], start=1):
            ids = [step["id"] for step in phase["steps"]]
            assert ids == [f"phase-{n}-step-{m}" for m in range(1, len(ids) + 1)]

    def test_answers_carry_their_legacy_keys(self):
        definition = copy.deepcopy(DEMO)
        steps = [step for phase in definition["phases"] for step in phase["steps"]]

        legacy = {step["key"]: step.get("legacy_key") for step in steps if "key" in step}
        assert legacy == {
            "booking-status": "situation.bookingStatus",
            "day-rate": "situation.dayRate",
            "goal": "situation.goal",
            "blocker": "situation.blocker",
            "confession": "situation.confession",
            "check-first": "phase2.checkFirst",
            "hundred-k-followers": "phase2.hundredKFollowers",
            "post-worked": "phase2.postWorked",
            "time-on-content": "phase3.timeOnContent",
            "hardest-part": "phase3.hardestPart",
            "content-creator-identity": "phase3.contentCreatorIdentity",
            "last-price-raise": "phase4.lastPriceRaise",
            "too-expensive-response": "phase4.tooExpensiveResponse",
            "pricing-fear": "phase4.pricingFear",
            "contact": None,
        }

    def test_booked_out_artists_skip_the_content_phase(self):
        definition = copy.deepcopy(DEMO)

        assert step_at(definition, 0, 4)["next"] == [
            {
                "when": {"key": "booking-status", "equals": "booked-3-months"},
                "goto": "phase-3-step-1",
            }
        ]

    def test_it_ends_with_a_contact_step_for_name_and_email(self):
        last = step_at(DEMO, 3, 3)

        assert (last["type"], last["fields"]) == ("contact", ["name", "email"])


class TestNormalization:
    def test_defaults_are_filled_in(self):
        document = base_document()
        step_at(document, 0, 0)["type"] = "multi_choice"
        step_at(document, 1, 0)["next"] = []

        definition = validate_document(document)

        assert step_at(definition, 0, 0) == {
            "id": "color",
            "type": "multi_choice",
            "key": "color",
            "prompt": "Pick a color",
            "required": True,
            "options": [{"value": "red", "label": "Red"}, {"value": "blue", "label": "Blue"}],
            "min_selected": 1,
            "max_selected": 2,
        }
        assert step_at(definition, 1, 0) == {
            "id": "why",
            "type": "text",
            "key": "why",
            "prompt": "Why?",
            "required": True,
            "max_length": 2000,
        }
        assert step_at(definition, 1, 1) == {
            "id": "done",
            "type": "info",
            "prompt": "Thanks!",
            "required": False,
        }

    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            ({"type": "long_text"}, {"max_length": 20000}),
            ({"type": "scale"}, {"min": 1, "max": 10}),
            ({"type": "number"}, {}),
            ({"type": "multi_choice", "required": False}, {"min_selected": 0, "max_selected": 2}),
        ],
    )
    def test_type_defaults(self, extra, expected):
        document = base_document()
        step = step_at(document, 0, 0)
        step.update(extra)
        if step["type"] not in ("single_choice", "multi_choice"):
            del step["options"]

        definition = validate_document(document)

        normalized = step_at(definition, 0, 0)
        assert {name: normalized[name] for name in expected} == expected
        assert not {"min", "max", "max_length", "min_selected"} - set(expected) & set(normalized)

    def test_null_fields_count_as_absent(self):
        document = base_document()
        document["description"] = None
        step_at(document, 1, 0)["next"] = None

        definition = validate_document(document)

        assert "description" not in definition
        assert "next" not in step_at(definition, 1, 0)

    def test_normalizing_twice_changes_nothing(self):
        definition = copy.deepcopy(DEMO)

        assert validate_document(copy.deepcopy(definition)) == definition

    def test_the_input_is_not_changed(self):
        document = base_document()
        before = copy.deepcopy(document)

        validate_document(document)

        assert document == before


class TestStructure:
    def test_root_must_be_a_mapping(self):
        assert errors_of(["not", "a", "mapping"]) == [
            "the document must be a mapping with slug, title and phases"
        ]

    def test_required_root_fields(self):
        assert errors_of({}) == ["slug: is required", "title: is required", "phases: is required"]

    def test_bad_slug(self):
        document = base_document()
        document["slug"] = "Check Up"

        assert errors_of(document) == [
            "slug: must be 1 to 80 lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        ]

    def test_phases_must_not_be_empty(self):
        document = base_document()
        document["phases"] = []

        assert errors_of(document) == ["phases: must list at least one of phases"]

    def test_duplicate_phase_id(self):
        document = base_document()
        document["phases"][1]["id"] = "one"

        assert errors_of(document) == ["phases[1].id: phase id 'one' is already used at phases[0]"]

    def test_unknown_field_is_an_error_with_a_suggestion(self):
        document = base_document()
        step_at(document, 1, 0)["promt"] = "Why, really?"

        assert errors_of(document) == [
            "phases[1].steps[0].promt: unknown field 'promt' (did you mean 'prompt'?)"
        ]

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (lambda doc: doc, "colour: unknown field 'colour'"),
            (lambda doc: doc["phases"][0], "phases[0].colour: unknown field 'colour'"),
            (
                lambda doc: step_at(doc, 0, 0)["options"][0],
                "phases[0].steps[0].options[0].colour: unknown field 'colour'",
            ),
        ],
    )
    def test_unknown_fields_at_every_level(self, where, expected):
        document = base_document()
        where(document)["colour"] = "red"

        assert errors_of(document) == [expected]

    def test_field_of_another_type_is_not_allowed(self):
        document = base_document()
        step_at(document, 1, 0)["options"] = [{"value": "a", "label": "A"}]

        assert errors_of(document) == [
            "phases[1].steps[0].options: field 'options' is not allowed on a 'text' step"
        ]

    def test_unknown_step_type(self):
        document = base_document()
        step_at(document, 1, 0)["type"] = "dropdown"

        assert errors_of(document) == [
            "phases[1].steps[0].type: unknown step type 'dropdown'; expected one of: "
            + ", ".join(STEP_TYPES)
        ]

    def test_duplicate_step_id(self):
        document = base_document()
        step_at(document, 1, 1)["id"] = "why"

        assert errors_of(document) == [
            "phases[1].steps[1].id: step id 'why' is already used at phases[1].steps[0]"
        ]

    def test_duplicate_key(self):
        document = base_document()
        step_at(document, 1, 0)["key"] = "color"

        assert errors_of(document) == [
            "phases[1].steps[0].key: key 'color' is already used by step 'color'"
        ]

    def test_an_info_key_must_not_clash_either(self):
        document = base_document()
        step_at(document, 1, 1)["key"] = "why"

        assert errors_of(document) == [
            "phases[1].steps[1].key: key 'why' is already used by step 'why'"
        ]

    def test_answer_steps_need_a_key_and_a_prompt(self):
        document = base_document()
        del step_at(document, 1, 0)["key"]
        del step_at(document, 1, 0)["prompt"]

        assert errors_of(document) == [
            "phases[1].steps[0].key: is required",
            "phases[1].steps[0].prompt: is required",
        ]

    def test_yaml_booleans_get_a_hint_to_quote(self):
        document = base_document()
        step_at(document, 0, 0)["options"][0]["label"] = True

        assert errors_of(document) == [
            "phases[0].steps[0].options[0].label: must be a string (put it in quotes)"
        ]

    def test_duplicate_legacy_key(self):
        document = base_document()
        step_at(document, 0, 0)["legacy_key"] = "situation.color"
        step_at(document, 1, 0)["legacy_key"] = "situation.color"

        assert errors_of(document) == [
            "phases[1].steps[0].legacy_key: legacy_key 'situation.color' is already used by "
            "step 'color'"
        ]

    def test_every_problem_is_reported_in_document_order(self):
        document = base_document()
        step_at(document, 1, 0)["type"] = "essay"
        step_at(document, 0, 0)["options"] = []
        document["title"] = ""

        assert errors_of(document) == [
            "title: must not be empty",
            "phases[0].steps[0].options: must list at least one of options",
            "phases[1].steps[0].type: unknown step type 'essay'; expected one of: "
            + ", ".join(STEP_TYPES),
        ]


class TestStepTypes:
    def test_missing_options(self):
        document = base_document()
        del step_at(document, 0, 0)["options"]

        assert errors_of(document) == ["phases[0].steps[0].options: is required"]

    def test_duplicate_option_value(self):
        document = base_document()
        step_at(document, 0, 0)["options"][1]["value"] = "red"

        assert errors_of(document) == [
            "phases[0].steps[0].options[1].value: option value 'red' is already used at options[0]"
        ]

    @pytest.mark.parametrize(
        ("bounds", "expected"),
        [
            ({"min_selected": 3}, "min_selected: must not be more than max_selected (2)"),
            ({"max_selected": 3}, "max_selected: must be at most 2, the number of options"),
            ({"max_selected": 0}, "max_selected: must be at least 1"),
            ({"min_selected": -1}, "min_selected: must be at least 0"),
            (
                {"min_selected": 2, "max_selected": 1},
                "min_selected: must not be more than max_selected (1)",
            ),
            ({"min_selected": 1.5}, "min_selected: must be a whole number"),
        ],
    )
    def test_multi_choice_bounds(self, bounds, expected):
        document = base_document()
        step_at(document, 0, 0).update(type="multi_choice", **bounds)

        assert errors_of(document) == [f"phases[0].steps[0].{expected}"]

    @pytest.mark.parametrize(
        ("step", "expected"),
        [
            ({"type": "scale", "min": 5, "max": 5}, "min: must be less than max (5)"),
            ({"type": "scale", "min": 11}, "min: must be less than max (10)"),
            ({"type": "scale", "max": 7.5}, "max: must be a whole number"),
            ({"type": "number", "min": 10, "max": 1}, "min: must not be more than max (1)"),
            ({"type": "number", "max": float("inf")}, "max: must be a number"),
            ({"type": "text", "max_length": 0}, "max_length: must be at least 1"),
            ({"type": "contact"}, "fields: is required"),
            (
                {"type": "contact", "fields": []},
                "fields: must list at least one of contact fields (name, email, phone)",
            ),
            (
                {"type": "contact", "fields": ["name", "address"]},
                "fields[1]: unknown contact field 'address'; expected name, email or phone",
            ),
            (
                {"type": "contact", "fields": ["email", "email"]},
                "fields[1]: 'email' is listed twice",
            ),
            ({"type": "video", "key": None}, "video_url: is required"),
            (
                {"type": "video", "video_url": "ftp://x/y.mp4"},
                "video_url: must be an http:// or https:// URL",
            ),
            (
                {"type": "info", "required": True},
                "required: a 'info' step takes no answer, so it cannot be required",
            ),
            ({"type": "boolean", "required": "yes"}, "required: must be true or false"),
        ],
    )
    def test_type_fields(self, step, expected):
        document = base_document()
        step_at(document, 1, 0).update(step)

        assert errors_of(document) == [f"phases[1].steps[0].{expected}"]

    def test_video_and_info_steps_need_no_key_or_prompt(self):
        document = base_document()
        step_at(document, 1, 0).clear()
        step_at(document, 1, 0).update(
            id="watch", type="video", video_url="https://example.com/a.mp4", body="Watch this."
        )

        definition = validate_document(document)

        assert step_at(definition, 1, 0) == {
            "id": "watch",
            "type": "video",
            "body": "Watch this.",
            "video_url": "https://example.com/a.mp4",
            "required": False,
        }


class TestRules:
    def test_goto_unknown_step(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"when": {"key": "color", "equals": "red"}, "goto": "nowhere"}
        ]

        assert errors_of(document) == ["phases[1].steps[0].next[0].goto: unknown step 'nowhere'"]

    def test_goto_an_earlier_step_is_a_cycle(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"when": {"key": "why", "answered": True}, "goto": "color"}
        ]

        assert errors_of(document) == [
            "phases[1].steps[0].next[0].goto: goto 'color' jumps back from step 'why' to an "
            "earlier step, which makes a cycle"
        ]

    def test_goto_the_same_step_is_a_cycle(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"when": {"key": "why", "answered": True}, "goto": "why"}
        ]

        assert errors_of(document) == [
            "phases[1].steps[0].next[0].goto: goto 'why' jumps back to this same step, "
            "which makes a cycle"
        ]

    def test_a_rule_without_when_always_applies(self):
        document = base_document()
        step_at(document, 0, 0)["next"] = [{"goto": "done"}]

        assert errors_of(document) == ["phases[1].steps[0]: step 'why' is unreachable"]

    def test_rules_covering_every_answer_leave_the_next_step_unreachable(self):
        document = base_document()
        step_at(document, 0, 0)["next"] = [
            {"when": {"key": "color", "equals": "red"}, "goto": "done"},
            {"when": {"key": "color", "in": ["blue"]}, "goto": "done"},
        ]

        assert errors_of(document) == ["phases[1].steps[0]: step 'why' is unreachable"]

    def test_answered_and_unanswered_together_always_jump(self):
        document = base_document()
        step_at(document, 0, 0)["next"] = [
            {"when": {"key": "color", "answered": False}, "goto": "done"},
            {"when": {"key": "color", "answered": True}, "goto": "done"},
        ]

        assert errors_of(document) == ["phases[1].steps[0]: step 'why' is unreachable"]

    def test_an_optional_step_can_still_fall_through(self):
        document = base_document()
        step_at(document, 0, 0)["required"] = False
        step_at(document, 0, 0)["next"] = [
            {"when": {"key": "color", "equals": "red"}, "goto": "done"},
            {"when": {"key": "color", "equals": "blue"}, "goto": "done"},
        ]

        assert validate_document(document)

    def test_a_rule_after_one_without_when_is_never_used(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"goto": "done"},
            {"when": {"key": "why", "answered": True}, "goto": "done"},
        ]

        assert errors_of(document) == [
            "phases[1].steps[0].next[1]: this rule is never used: next[0] has no 'when', "
            "so it always applies"
        ]

    def test_unknown_operator(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"when": {"key": "color", "equal": "red"}, "goto": "done"}
        ]

        assert errors_of(document) == [
            "phases[1].steps[0].next[0].when.equal: unknown operator 'equal'; expected one of: "
            "equals, not_equals, in, gt, gte, lt, lte, answered"
        ]

    def test_exactly_one_operator(self):
        document = base_document()
        step_at(document, 1, 0)["next"] = [
            {"when": {"key": "color"}, "goto": "done"},
            {"when": {"key": "color", "equals": "red", "in": ["blue"]}, "goto": "done"},
        ]

        assert errors_of(document) == [
            "phases[1].steps[0].next[0].when: needs one operator: "
            "equals, not_equals, in, gt, gte, lt, lte, answered",
            "phases[1].steps[0].next[1].when: has 2 operators (equals, in); use exactly one",
        ]

    def test_key_must_be_answered_before_the_rule(self):
        document = base_document()
        step_at(document, 0, 0)["next"] = [
            {"when": {"key": "why", "answered": True}, "goto": "done"}
        ]

        assert errors_of(document) == [
            "phases[0].steps[0].next[0].when.key: key 'why' is not answered before this step"
        ]

    def test_info_keys_are_never_answered(self):
        document = base_document()
        document["phases"].append(
            {"id": "three", "title": "Three", "steps": [{"id": "end", "type": "info"}]}
        )
        step_at(document, 1, 1)["key"] = "thanks"
        step_at(document, 1, 1)["next"] = [
            {"when": {"key": "thanks", "answered": True}, "goto": "end"}
        ]

        assert errors_of(document) == [
            "phases[1].steps[1].next[0].when.key: key 'thanks' is not answered before this step"
        ]

    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            (
                {"key": "color", "equals": "green"},
                "when.equals: 'green' is not an option of step 'color'; expected one of: red, blue",
            ),
            (
                {"key": "color", "in": ["red", "green"]},
                "when.in[1]: 'green' is not an option of step 'color'; expected one of: red, blue",
            ),
            ({"key": "color", "in": []}, "when.in: must be a non-empty list of values"),
            (
                {"key": "color", "gt": 3},
                "when.gt: 'gt' only applies to number and scale steps; "
                "step 'color' is a single_choice step",
            ),
            ({"key": "why", "lte": "ten"}, "when.lte: must be a number"),
            ({"key": "why", "answered": "yes"}, "when.answered: must be true or false"),
            (
                {"key": "why", "equals": 3},
                "when.equals: must be a string, because step 'why' is a text step",
            ),
            (
                {"key": "why", "equals": None},
                "when.equals: must be a string, a number or true/false",
            ),
        ],
    )
    def test_operand_must_suit_the_step(self, when, expected):
        document = base_document()
        step_at(document, 1, 0)["next"] = [{"when": when, "goto": "done"}]

        assert errors_of(document) == [f"phases[1].steps[0].next[0].{expected}"]

    def test_boolean_and_contact_operands(self):
        document = base_document()
        document["phases"][1]["steps"][1:1] = [
            {"id": "ok", "type": "boolean", "key": "ok", "prompt": "OK?"},
            {"id": "who", "type": "contact", "key": "who", "prompt": "Who?", "fields": ["name"]},
        ]
        step_at(document, 1, 2)["next"] = [
            {"when": {"key": "ok", "equals": "yes"}, "goto": "done"},
            {"when": {"key": "who", "equals": "Ada"}, "goto": "done"},
            {"when": {"key": "who", "answered": False}, "goto": "done"},
        ]

        assert errors_of(document) == [
            "phases[1].steps[2].next[0].when.equals: must be true or false, because step 'ok' "
            "is boolean",
            "phases[1].steps[2].next[1].when.equals: only 'answered' applies to a contact step "
            "('who')",
        ]

    def test_rules_are_normalized(self):
        document = base_document()
        step_at(document, 0, 0)["next"] = [
            {"goto": "done", "when": {"in": ["red"], "key": "color"}}
        ]

        rules = step_at(validate_document(document), 0, 0)["next"]

        assert rules == [{"when": {"key": "color", "in": ["red"]}, "goto": "done"}]
        assert list(rules[0]) == ["when", "goto"]


class TestParsing:
    def test_yaml_syntax_error_carries_a_line_number(self):
        text = "slug: demo\ntitle: Demo\nphases:\n  - id: one\n    title: [unclosed\n"

        with pytest.raises(DocumentError) as caught:
            parse_document(text)

        (error,) = caught.value.errors
        assert error.line == 6
        assert str(error).startswith("line 6: invalid YAML: ")

    def test_yaml_indentation_error(self):
        with pytest.raises(DocumentError) as caught:
            parse_document("slug: demo\n  title: Demo\n")

        assert str(caught.value) == (
            "line 2: invalid YAML: mapping values are not allowed here at column 8"
        )

    def test_json_syntax_error_carries_a_line_number(self):
        text = '{\n  "slug": "demo",\n  "title": "Demo"\n  "phases": []\n}'

        with pytest.raises(DocumentError) as caught:
            parse_document(text)

        assert str(caught.value) == "line 4: invalid JSON: Expecting ',' delimiter at column 3"

    def test_json_with_tabs_is_accepted(self):
        text = json.dumps(base_document(), indent="\t")

        assert load_document(text) == validate_document(base_document())

    def test_duplicate_yaml_field(self):
        text = "slug: demo\ntitle: Demo\nslug: other\n"

        with pytest.raises(DocumentError) as caught:
            parse_document(text)

        assert str(caught.value) == (
            "line 3: invalid YAML: field 'slug' appears twice in the same mapping "
            "(first on line 1) at column 1"
        )

    def test_duplicate_json_field(self):
        with pytest.raises(DocumentError) as caught:
            parse_document('{"slug": "a", "slug": "b"}')

        assert str(caught.value) == "field 'slug' appears twice in the same object"

    def test_aliases_are_rejected(self):
        text = "slug: demo\ntitle: &t Demo\ndescription: *t\n"

        with pytest.raises(DocumentError) as caught:
            parse_document(text)

        assert caught.value.errors[0].line == 3
        assert "aliases (*name) are not allowed" in str(caught.value)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", "the document is empty"),
            ("# nothing here\n", "the document is empty"),
            ("- a\n- b\n", "line 1: the document must be a mapping with slug, title and phases"),
            ("just words", "line 1: the document must be a mapping with slug, title and phases"),
        ],
    )
    def test_the_root_must_be_a_mapping(self, text, expected):
        with pytest.raises(DocumentError) as caught:
            parse_document(text)

        assert str(caught.value) == expected

    def test_bytes_are_decoded_as_utf8(self):
        text = dump_document(validate_document(base_document()))

        assert parse_document(b"\xef\xbb\xbf" + text.encode()) == parse_document(text)

    def test_bytes_that_are_not_utf8(self):
        with pytest.raises(DocumentError) as caught:
            parse_document(b"slug: demo\ntitle: \xff\n")

        assert str(caught.value) == "line 2: the document is not UTF-8 text"

    def test_load_document_points_at_lines(self):
        text = "slug: demo\ntitle: Demo\nphases:\n  - id: one\n    title: One\n    steps:\n" + (
            "      - id: a\n        type: dropdown\n"
        )

        with pytest.raises(DocumentError) as caught:
            load_document(text)

        (error,) = caught.value.errors
        assert (error.path, error.line) == ("phases[0].steps[0].type", 8)

    def test_load_document_points_at_the_parent_of_a_missing_field(self):
        text = "slug: demo\ntitle: Demo\nphases:\n  - id: one\n    title: One\n"

        with pytest.raises(DocumentError) as caught:
            load_document(text)

        (error,) = caught.value.errors
        assert (str(error), error.line) == ("phases[0].steps: is required", 4)


class TestErrors:
    def test_field_error_text(self):
        assert str(FieldError("slug", "is required")) == "slug: is required"
        assert str(FieldError("slug", "is required", line=3)) == "slug: is required"
        assert str(FieldError("", "invalid YAML: oops", line=3)) == "line 3: invalid YAML: oops"
        assert str(FieldError("", "the document is empty")) == "the document is empty"

    def test_document_error_lists_one_problem_per_line(self):
        error = DocumentError(
            [FieldError("slug", "is required"), FieldError("title", "is required")]
        )

        assert str(error) == "slug: is required\ntitle: is required"
        assert isinstance(error, ValueError)

    def test_document_error_survives_pickling(self):
        error = DocumentError([FieldError("slug", "is required", 1)])

        assert pickle.loads(pickle.dumps(error)).errors == error.errors


class TestDumpAndChecksum:
    def test_dump_then_load_gives_the_same_definition(self):
        definition = copy.deepcopy(DEMO)

        assert load_document(dump_document(definition)) == definition

    def test_dump_puts_fields_in_reading_order(self):
        definition = reorder_keys(DEMO)

        text = dump_document(definition)

        assert text.startswith("slug: rafael-tats\ntitle: Pricing for tattoo artists\n")
        assert (
            "  - id: phase-1-step-1\n        type: single_choice\n        key: booking-status\n"
            in text
        )
        assert "- {value: booked-3-months, label: 3+ months out}" in text
        assert "- when: {key: booking-status, equals: booked-3-months}\n" in text
        assert "fields: [name, email]" in text

    def test_multi_line_text_is_dumped_as_a_block(self):
        definition = validate_document(base_document())
        step_at(definition, 1, 1)["body"] = "First line.\nSecond line.\n"

        text = dump_document(definition)

        assert "body: |\n" in text
        assert load_document(text) == definition

    def test_checksum_ignores_key_order(self):
        definition = copy.deepcopy(DEMO)

        assert checksum(reorder_keys(definition)) == checksum(definition)
        assert len(checksum(definition)) == 64

    def test_checksum_changes_with_the_content(self):
        definition = copy.deepcopy(DEMO)
        changed = copy.deepcopy(definition)
        step_at(changed, 0, 0)["prompt"] += "?"

        assert checksum(changed) != checksum(definition)


class TestGeneratedFlows:
    @PROPERTY_SETTINGS
    @given(flow_documents())
    def test_generated_flows_validate_dump_and_checksum(self, document):
        definition = validate_document(document)

        assert json.loads(json.dumps(definition, allow_nan=False)) == definition
        assert validate_document(definition) == definition
        assert load_document(dump_document(definition)) == definition
        assert checksum(validate_document(reorder_keys(document))) == checksum(definition)
        assert checksum(reorder_keys(definition)) == checksum(definition)
