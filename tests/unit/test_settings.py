from pathlib import Path

import pytest

from service.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones_in_dot_nextbest() -> None:
    settings = load_settings({})
    assert settings.home == Path(".nextbest").absolute()
    assert settings.event_transport == "local"
    assert settings.online_store == "sqlite"
    assert settings.operational_url == f"sqlite:///{settings.home / 'nextbest.db'}"
    assert settings.tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"


def test_unknown_variable_fails_and_names_it() -> None:
    with pytest.raises(SettingsError, match="NEXTBEST_ONLINE_STOR"):
        load_settings({"NEXTBEST_ONLINE_STOR": "redis"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NEXTBEST_ONLINE_STORE", "mongodb"),
        ("NEXTBEST_API_PORT", "eighty"),
        ("NEXTBEST_API_PORT", "70000"),
        ("NEXTBEST_REDIS_URL", "localhost:6379"),
        ("NEXTBEST_EVENT_TRANSPORT", "carrier-pigeon"),
    ],
)
def test_invalid_values_fail_with_the_variable_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_other_prefixes_are_ignored_and_values_are_typed() -> None:
    settings = load_settings({"PATH": "/bin", "NEXTBEST_API_PORT": "9001", "NEXTBEST_HOME": "/x"})
    assert settings.api_port == 9001
    assert settings.home == Path("/x")


def test_topic_namespace_prefixes_topics() -> None:
    assert load_settings({"NEXTBEST_TOPIC_NAMESPACE": "t1."}).topic("a.b") == "t1.a.b"
    with pytest.raises(SettingsError):
        load_settings({"NEXTBEST_TOPIC_NAMESPACE": "no dots"})
