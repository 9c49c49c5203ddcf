"""``${…}`` interpolation of manifest strings (pure function over an env mapping)."""

from __future__ import annotations

import pytest

from modelmora.manifest.interpolate import InterpolationError, interpolate

pytestmark = pytest.mark.torch_free

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other"}


@pytest.mark.parametrize(
    ("text", "expected", "used"),
    [
        ("no variables here", "no variables here", ()),
        ("${SET}", "value", ("SET",)),
        ("pre-${SET}-post", "pre-value-post", ("SET",)),
        ("${EMPTY}", "", ("EMPTY",)),  # plain ${VAR}: set-but-empty is a value
        ("${UNSET:-fallback}", "fallback", ("UNSET",)),
        ("${EMPTY:-fallback}", "fallback", ("EMPTY",)),  # :- also covers empty
        ("${SET:-fallback}", "value", ("SET",)),
        ("${UNSET:-}", "", ("UNSET",)),  # an empty default is allowed
        ("${UNSET:-a:b/c}", "a:b/c", ("UNSET",)),
        ("${UNSET:-${OTHER}}", "other", ("UNSET", "OTHER")),  # nested default
        ("${SET:-${MISSING}}", "value", ("SET",)),  # default not evaluated when not needed
        ("${SET:?must be set}", "value", ("SET",)),
        ("$${SET}", "${SET}", ()),  # $$ escapes
        ("cost: $$5", "cost: $5", ()),
        ("$$$${SET}", "$${SET}", ()),
        ("$$${SET}", "$value", ("SET",)),
        ("price $5, regex ^a$", "price $5, regex ^a$", ()),  # a lone $ stays literal
        ("ends with $", "ends with $", ()),
        ("${SET}${OTHER}${SET}", "valueothervalue", ("SET", "OTHER")),  # names deduplicated
        ("{SET} } {", "{SET} } {", ()),  # braces without $ are text
    ],
)
def test_interpolation_results(text: str, expected: str, used: tuple[str, ...]) -> None:
    assert interpolate(text, ENV) == (expected, used)


def test_missing_variable_names_it_and_suggests_a_default() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("hf://${ORG}/model", ENV)
    assert info.value.message == "environment variable ORG is not set"
    assert info.value.hint == "set ORG or use ${ORG:-default}"


@pytest.mark.parametrize(("name", "state"), [("UNSET", "not set"), ("EMPTY", "empty")])
def test_required_variable_carries_the_users_message(name: str, state: str) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("${" + name + ":?export it from your vault}", ENV)
    expected = f"environment variable {name} is {state}: export it from your vault"
    assert info.value.message == expected


def test_required_variable_without_message() -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate("${UNSET:?}", ENV)
    assert info.value.message == "environment variable UNSET is not set"


@pytest.mark.parametrize("text", ["${SET", "x ${SET:-abc", "${", "${SET:-${OTHER}"])
def test_unterminated_reference_is_an_error(text: str) -> None:
    with pytest.raises(InterpolationError, match="unterminated variable reference"):
        interpolate(text, ENV)


@pytest.mark.parametrize("text", ["${}", "${1ABC}", "${A B}", "${-x}"])
def test_invalid_variable_name(text: str) -> None:
    with pytest.raises(InterpolationError, match="invalid variable reference"):
        interpolate(text, ENV)


@pytest.mark.parametrize("text", ["${SET-x}", "${SET?x}", "${SET:+x}"])
def test_unsupported_operator_lists_the_supported_forms(text: str) -> None:
    with pytest.raises(InterpolationError) as info:
        interpolate(text, ENV)
    assert info.value.hint == "use ${SET}, ${SET:-default} or ${SET:?message}"


def test_syntax_error_in_an_unused_default_is_still_reported() -> None:
    with pytest.raises(InterpolationError, match="invalid variable reference"):
        interpolate("${SET:-${1BAD}}", ENV)


def test_error_never_contains_a_value() -> None:
    secret_env = {"TOKEN": "hf_supersecretvalue"}
    with pytest.raises(InterpolationError) as info:
        interpolate("${TOKEN}${MISSING}", secret_env)
    assert "hf_supersecretvalue" not in str(info.value)
    assert "MISSING" in info.value.message
