"""The forms of the assisted-migration case run, as the Prefect UI receives them.

The UI renders a pause form from the JSON schema the run saves, and the server checks the
submitted values against that schema before the run resumes; ``schema_tools.validate`` is that
check. These tests need no server: test_migration_ui.py drives the same forms through the API.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from prefect.input.run_input import create_v2_schema
from prefect.utilities.schema_tools import ValidationError, validate

from flows.migration_flow import (
    FORMS,
    TITLES,
    ActionForm,
    BookingForm,
    CaseCard,
    CaseInput,
    ChooseAction,
    FreshLinksForm,
    LogTimeForm,
    form,
    outcome_line,
)
from kernel.errors import BadInput

FIELDS = {
    "log-time": {"minutes", "kind", "on", "note", "entry_id"},
    "book": {"start", "minutes"},
    "cancel": {"booking_id"},
    "no-show": {"booking_id"},
    "correct": {"reverses", "note", "entry_id"},
    "deliver-export": {"target_uri"},
    "fresh-links": {"lifetime"},
}


def schema_of(model: type[Any], **defaults: Any) -> dict[str, Any]:
    """The schema the run saves for a pause (what the UI renders)."""
    shown = form(model, "A title", "A description", **defaults)
    return dict(create_v2_schema(shown.__name__, model_base=shown))


def refused(values: dict[str, Any], schema: dict[str, Any]) -> bool:
    try:
        validate(values, schema, raise_on_error=True)
    except ValidationError:
        return True
    return False


def test_every_action_has_a_form_with_only_its_fields() -> None:
    assert set(FORMS) | {"close"} == set(TITLES)
    assert {action: set(schema_of(model)["properties"]) for action, model in FORMS.items()} \
        == FIELDS
    assert set(schema_of(ChooseAction)["properties"]) == {"action"}


@pytest.mark.parametrize("model", [ChooseAction, *sorted(set(FORMS.values()),
                                                       key=lambda m: m.__name__)])
def test_no_field_needs_a_type_toggle_and_every_title_is_in_words(model: type[Any]) -> None:
    schema = schema_of(model)
    text = json.dumps(schema)
    # "X | None" renders as anyOf [..., null]: the UI's "Property is type None" toggle
    assert "anyOf" not in text and "oneOf" not in text and '"null"' not in text
    for name, prop in schema["properties"].items():
        assert prop["description"], name
        assert prop["title"] != name.replace("_", " ").title(), f"{name}: a generated title"
        assert "_" not in prop["title"], name


def test_kind_must_be_chosen_and_the_day_is_prefilled_without_losing_its_title() -> None:
    schema = schema_of(LogTimeForm, on=date(2026, 11, 27))
    kind = schema["properties"]["kind"]
    assert "kind" in schema["required"] and "default" not in kind
    assert kind["enum"] == ["work", "live"]
    day = schema["properties"]["on"]
    assert day["default"] == "2026-11-27" and day["title"] == "Day" and day["description"]
    assert schema["title"] == "A title"
    assert refused({"minutes": 30}, schema)  # no kind: the form refuses, nothing is billed
    assert not refused({"minutes": 30, "kind": "live"}, schema)


@pytest.mark.parametrize(("action", "values"), [
    ("log-time", {"minutes": 0, "kind": "work"}),
    ("log-time", {"minutes": 601, "kind": "work"}),
    ("log-time", {"minutes": 5, "kind": "play"}),
    ("log-time", {"minutes": 5, "kind": "work", "entry_id": "two words"}),
    ("log-time", {"minutes": 5, "kind": "work", "note": "x" * 501}),
    ("book", {"start": "2026-12-01T10:00:00+01:00"}),
    ("cancel", {"booking_id": ""}),
    ("correct", {"reverses": "../x"}),
    ("deliver-export", {"target_uri": "ftp://elsewhere/x"}),
    ("fresh-links", {"lifetime": "7 days"}),
])
def test_the_form_refuses_a_wrong_value(action: str, values: dict[str, Any]) -> None:
    assert refused(values, schema_of(FORMS[action], **(
        {"on": date(2026, 11, 27)} if action == "log-time" else {})))


def test_filled_forms_become_the_action_record() -> None:
    logged = LogTimeForm(minutes=45, kind="live", on=date(2026, 11, 27))
    assert logged.case_input("log-time") == CaseInput(
        action="log-time", minutes=45, kind="live", on=date(2026, 11, 27), entry_id=None)
    assert BookingForm(booking_id="B-1").case_input("no-show") == CaseInput(
        action="no-show", booking_id="B-1")
    assert FreshLinksForm(lifetime="12h").case_input("fresh-links").link_ttl_seconds == 43_200
    assert FreshLinksForm().case_input("fresh-links").link_ttl_seconds == 7 * 86_400
    with pytest.raises(BadInput, match="7 days"):
        FreshLinksForm(lifetime="8d").case_input("fresh-links")
    assert issubclass(LogTimeForm, ActionForm)


def test_the_card_shows_a_refusal_and_leads_the_next_form_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CaseCard, "publish", lambda _self: None)  # no run here
    card = CaseCard("M-1", "t-1", "2026-12-01T10:00:00+01:00")
    assert card.prompt().startswith("Choose what to record on case `M-1`")
    card.record("log-time", outcome_line({"case_id": "M-1", "entry_id": "w-1",
                                          "recorded": True}), refused=False)
    assert card.prompt().startswith("Recorded (Log time): entry id w-1, recorded True.")
    card.record("book", "booking refused: | ![x](http://evil) <b>\nnext line", refused=True)
    prompt = card.prompt()
    assert prompt.startswith("**Refused (Book live assistance):** booking refused:")
    assert "nothing was written" in prompt
    # what an error quotes stays text: no table break, image, HTML or second line
    assert r"\| \!\[x\]\(http://evil\) \<b\> next line" in prompt
    rows = card.markdown().splitlines()[-2:]
    assert rows[0].endswith("| log-time | entry id w-1, recorded True |")
    assert "| book | **refused**: booking refused:" in rows[1]
    assert card.prompt("cancel") == "**Cancel a booking** on case `M-1` (tenant `t-1`)."
