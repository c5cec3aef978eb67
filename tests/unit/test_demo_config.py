"""Two simulated sites on one broker must not share an MQTT client id: the broker would close
one connection each time the other connects, and neither would deliver steadily to HQ."""
from __future__ import annotations

from rfidd.demo import default_scenario, demo_config
from simulator import Scenario


def test_two_demo_sites_started_together_have_distinct_mqtt_client_ids() -> None:
    scenario = Scenario.load(default_scenario())
    ports = {name: 1 for name in scenario.readers}
    a = demo_config(scenario, ports, "sqlite:///a.db", "mqtt://127.0.0.1:1883", site_id="st-a")
    b = demo_config(scenario, ports, "sqlite:///b.db", "mqtt://127.0.0.1:1883", site_id="st-b")
    assert a.mqtt.client_id != b.mqtt.client_id
    assert a.mqtt.client_id is not None and "st-a" in a.mqtt.client_id


def test_same_demo_site_twice_at_once_has_distinct_mqtt_client_ids() -> None:
    scenario = Scenario.load(default_scenario())
    ports = {name: 1 for name in scenario.readers}
    a = demo_config(scenario, ports, "sqlite:///a.db", "mqtt://127.0.0.1:1883")
    b = demo_config(scenario, ports, "sqlite:///b.db", "mqtt://127.0.0.1:1883")
    assert a.mqtt.client_id != b.mqtt.client_id
