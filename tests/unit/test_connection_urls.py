"""Credentials and TLS travel in the backends' URLs (issue 8); they never reach an error message."""

from __future__ import annotations

import pytest

from strowger.bus.kafka import bootstrap_servers, client_config
from strowger.errors import ConfigError
from strowger.settings import Settings, redact_url


def test_a_plain_kafka_url_is_just_its_servers() -> None:
    assert client_config("kafka://k1:9092,k2:9092") == {"bootstrap.servers": "k1:9092,k2:9092"}


def test_kafka_credentials_mean_scram_over_tls_unless_the_url_says_otherwise() -> None:
    config = client_config("kafka://svc-billing:s%40cret@k1:9093,k2:9093")
    assert config == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-billing",
        "sasl.password": "s@cret",
    }


def test_librdkafka_settings_in_the_query_are_passed_through_and_win() -> None:
    url = "kafka://u:p@k1:9093?sasl.mechanism=PLAIN&ssl.ca.location=/etc/kafka/ca.pem"
    config = client_config(url)
    assert config["sasl.mechanism"] == "PLAIN"
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert config["security.protocol"] == "SASL_SSL"


def test_tls_without_credentials() -> None:
    config = client_config("kafka://k1:9093?security.protocol=SSL&ssl.ca.location=/ca.pem")
    assert config == {
        "bootstrap.servers": "k1:9093",
        "security.protocol": "SSL",
        "ssl.ca.location": "/ca.pem",
    }


@pytest.mark.parametrize("url", ["kafka://k1:9092?timeout=5", "kafka://u:p@/", "amqp://k1:9092"])
def test_a_bad_kafka_url_is_a_config_error_that_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        client_config(url)
    assert ":p@" not in str(raised.value)


def test_servers_ignore_credentials() -> None:
    assert bootstrap_servers("kafka://u:p@k1:9093,k2:9093/?security.protocol=SSL") == "k1:9093,k2:9093"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqps://svc:hunter2@mq:5671/prod", "amqps://svc:***@mq:5671/prod"),
        (
            "postgresql://svc:pw@db/strowger?sslmode=verify-full",
            "postgresql://svc:***@db/strowger?sslmode=verify-full",
        ),
        ("kafka://k1:9092", "kafka://k1:9092"),
        ("amqp://guest@mq/", "amqp://guest@mq/"),
    ],
)
def test_redacted_urls_keep_everything_but_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_accept_tls_urls_for_every_backend() -> None:
    settings = Settings(
        database_url="postgresql://svc:pw@db:5432/strowger?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem",
        bus_url="kafka://svc:pw@k1:9093?ssl.ca.location=/etc/ssl/ca.pem",
    )
    assert settings.bus_url.startswith("kafka://")
    assert Settings(bus_url="amqps://svc:pw@mq:5671/prod?cafile=/etc/ssl/ca.pem").bus_url.startswith(
        "amqps://"
    )
