"""Feature specs (frozen, hashed, round-tripped) and the registry's catalogue."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest

from oihedge.features.registry import (
    CORE_V1,
    CORE_V2,
    FAMILIES,
    FEATURES,
    get_spec,
    graph,
    lookback,
    warmup,
)
from oihedge.features.spec import FeatureParams, FeatureSpec, ResolvedParams

NAME_RE = re.compile(r"^(oi|funding|corr|vol|liq|depth|opt)_[a-z0-9]+(_[a-z0-9]+)*$")


def test_hash_is_sha256_of_canonical_json() -> None:
    spec = CORE_V1.resolve("5m")
    assert spec.hash() == hashlib.sha256(spec.to_json().encode()).hexdigest()
    assert spec.to_json() == json.dumps(
        json.loads(spec.to_json()), sort_keys=True, separators=(",", ":")
    )


def test_equal_specs_hash_equal_and_any_change_changes_the_hash() -> None:
    a = FeatureSpec("m", 1, ("oi_agg_usd", "funding_z_7d"))
    assert a.hash() == FeatureSpec("m", 1, ("oi_agg_usd", "funding_z_7d")).hash()
    others = [
        FeatureSpec("m", 2, ("oi_agg_usd", "funding_z_7d")),
        FeatureSpec("m", 1, ("funding_z_7d", "oi_agg_usd")),
        FeatureSpec("m", 1, ("oi_agg_usd", "funding_z_7d"), FeatureParams(min_coverage=0.6)),
        a.resolve("1h"),
    ]
    assert len({a.hash(), *(o.hash() for o in others)}) == 1 + len(others)


def test_json_round_trip_keeps_everything() -> None:
    spec = FeatureSpec(
        "small", 3, ("oi_chg_4h_pct",), FeatureParams(bar="1h", funding_max_age="10h")
    )
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec and again.hash() == spec.hash()
    assert again.params.bar == timedelta(hours=1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Core"}, "spec name must be lowercase"),
        ({"version": 0}, "version must be an integer >= 1, got 0"),
        ({"features": ()}, "at least one feature"),
        ({"features": ("oi_agg_usd", "oi_agg_usd")}, "lists feature 'oi_agg_usd' twice"),
    ],
)
def test_bad_spec_raises_naming_the_value(kwargs: dict, match: str) -> None:
    base = {"name": "core", "version": 1, "features": ("oi_agg_usd",)}
    with pytest.raises(ValueError, match=match):
        FeatureSpec(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_coverage": 1.5}, r"min_coverage must be a number in \[0, 1\], got 1.5"),
        ({"ratio_floor_pct": 0}, "ratio_floor_pct must be a finite number > 0, got 0"),
        ({"bar": "5 minutes"}, "duration must look like"),
        ({"funding_max_age": None}, "funding_max_age must be a duration"),
    ],
)
def test_bad_params_raise_naming_the_value(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureParams(**kwargs)


def test_unknown_parameter_in_json_raises() -> None:
    with pytest.raises(ValueError, match="unknown feature parameter 'bars'"):
        FeatureParams.from_dict({"bars": "5m"})


def test_resolve_fixes_bar_and_staleness_and_refuses_another_bar() -> None:
    params = FeatureParams().resolve("5m")
    assert params.bar == timedelta(minutes=5) and params.max_staleness == timedelta(minutes=10)
    with pytest.raises(ValueError, match="bar must be given"):
        FeatureParams().resolve()
    with pytest.raises(ValueError, match="the spec fixes bar='1h', got a panel with bar='5m'"):
        FeatureParams(bar="1h").resolve("5m")


def test_a_resolved_spec_has_resolved_params_with_a_bar_even_read_back() -> None:
    spec = FeatureSpec("m", 1, ("oi_agg_usd",)).resolve("1h")
    assert isinstance(spec.params, ResolvedParams) and spec.params.bar == timedelta(hours=1)
    again = FeatureSpec.from_json(spec.to_json())
    assert isinstance(again.params, ResolvedParams) and again == spec
    assert not isinstance(FeatureSpec.from_json(CORE_V1.to_json()).params, ResolvedParams)
    by_hand = FeatureParams(bar="1h", max_staleness="2h")  # equal values, equal params
    assert by_hand == spec.params and hash(by_hand) == hash(spec.params)
    with pytest.raises(ValueError, match="resolved feature parameters need a bar, got None"):
        ResolvedParams()
    with pytest.raises(ValueError, match="need a max_staleness, got None"):
        ResolvedParams(bar="1h")


def test_graph_needs_a_resolved_spec_of_known_features() -> None:
    with pytest.raises(ValueError, match="must be resolved"):
        graph(CORE_V1)
    with pytest.raises(ValueError, match="unknown feature 'oi_magic'"):
        graph(FeatureSpec("x", 1, ("oi_magic",)).resolve("5m"))
    with pytest.raises(ValueError, match="unknown feature spec 'nope'; known: core"):
        get_spec("nope")


def test_catalogue_names_say_family_and_window() -> None:
    assert len(FEATURES) >= 50
    for name, feature in FEATURES.items():
        assert feature.name == name and NAME_RE.match(name), name
        assert feature.family in FAMILIES
        assert feature.description and feature.unit
        if feature.window is not None:
            assert f"_{feature.window}" in name, (name, feature.window)
    assert {f.family for f in FEATURES.values()} == set(FAMILIES)


def test_core_spec_is_every_feature_and_named_in_the_issue() -> None:
    assert set(CORE_V1.features) == {n for n, f in FEATURES.items() if f.family != "options"}
    for must in ("oi_chg_4h_pct", "oi_div_xvenue_4h", "oi_dev_24h_pct", "funding_z_7d"):
        assert must in CORE_V1.features


def test_core_v2_is_v1_then_the_options_family_and_v1_is_frozen() -> None:
    assert CORE_V2.features[: len(CORE_V1.features)] == CORE_V1.features
    assert set(CORE_V2.features) == set(FEATURES)
    options = CORE_V2.features[len(CORE_V1.features) :]
    assert {FEATURES[n].family for n in options} == {"options"}
    for stem in ("oi", "pcr", "iv", "rr25"):
        for window in ("1h", "4h", "24h"):
            assert any(n.startswith(f"opt_{stem}_chg_{window}") for n in options), (stem, window)
        assert f"opt_{stem}_z_7d" in options
    # trained models reference v1 by its hash: adding a family must not move it
    assert CORE_V1.hash() == "9366dcde1be34eb84e0c4ab4c6226b3766c127143b317f0654fce73d694c496d"
    assert get_spec("core") is CORE_V1 and get_spec("core", 1) is CORE_V1
    assert get_spec("core@v2") is CORE_V2 and get_spec("core", 2) is CORE_V2
    with pytest.raises(ValueError, match="unknown feature spec 'core@v9'; known: core, "):
        get_spec("core@v9")


def test_warm_up_and_lookback_are_durations_that_scale_with_windows() -> None:
    spec = CORE_V1.resolve("1h")
    w = warmup(spec)
    assert w["oi_agg_usd"] == timedelta(0)
    assert w["oi_chg_24h_pct"] == timedelta(hours=24)
    assert w["funding_z_7d"] >= timedelta(days=3)
    assert lookback(spec) >= timedelta(days=8)
