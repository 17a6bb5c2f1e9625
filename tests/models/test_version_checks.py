"""Whether a version may serve, from its tags (:func:`oihedge.models.version_checks.serving_refusal`);
the feature-spec check runs through the registry in tests/models/test_registry.py."""

from __future__ import annotations

import pytest

from oihedge.models.version_checks import serving_refusal


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({"gate_passed": "true", "gate": '{"passed": true}'}, None),  # before the promotion tag
        ({"forced_by": "a", "forced_reason": "why"}, None),
        ({"forced_by": "a", "forced_reason": " "}, "without a recorded reason"),
        ({"gate_passed": "true"}, "not backed by a passed gate verdict"),
        ({"gate_passed": "false"}, "the gate refused it"),
        ({}, "no gate verdict"),
        ({"promotion": '{"as": "m/1", "action": "promote", "gate_passed": true}'}, None),
        ({"promotion": '{"as": "m/1", "action": "force", "reason": "why"}'}, None),
        ({"promotion": '{"as": "m/1", "action": "force", "reason": ""}'}, "records neither"),
        ({"promotion": '{"as": "m/1", "action": "promote", "gate_passed": false}'}, "neither"),
        ({"promotion": '{"as": "x/4", "action": "promote", "gate_passed": true}'}, "x/4"),
        ({"promotion": "garbage"}, "not a promotion record"),
    ],
)
def test_serving_refusal(tags, reason):
    found = serving_refusal("m", "1", tags)
    assert found is None if reason is None else reason in found
