"""Secrets of any connection, echoed by a service, are masked by their shape too.

The triggerer never reads the Slack connection (nor the Google or Dex login of
another task), so Airflow's masker there does not know those secrets; what the
service echoes must still not reach a log, an event or Slack in clear.
"""

from __future__ import annotations

import pytest

from kfp_bridge.redaction import airflow_redact, redact_shapes

SLACK_WEBHOOK = "https://hooks.slack.com/services/T0AB12/B0CD34/s1ackW3bhookS3cret"
SECRETS = {
    "slack webhook path": (SLACK_WEBHOOK, "s1ackW3bhookS3cret"),
    "slack bot token": ("token xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    "google access token": (
        "access ya29.a0AfB_byC-standin-google-token",
        "ya29.a0AfB_byC-standin-google-token",
    ),
    "jwt": ("id eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl", "eyJhdWQiOiJ4In0"),
    "authorization header": ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    "dex session cookie": (
        "Cookie: oauth2_proxy_kubeflow=dexS3ssionC00kie9f8e; other=1",
        "dexS3ssionC00kie9f8e",
    ),
    "quoted cookie in a JSON echo": (
        '{"headers": {"cookie": "oauth2_proxy_kubeflow=dexS3ssion2"}}',
        "dexS3ssion2",
    ),
    "password in a URL": ("postgresql://airflow:pgS3cret@db/airflow", "pgS3cret"),
}


@pytest.mark.parametrize(("text", "secret"), SECRETS.values(), ids=list(SECRETS))
def test_secret_shapes_are_masked_whoever_owns_them(text, secret):
    echoed = f"upstream said: {text} (request refused)"
    assert secret in echoed
    masked = airflow_redact(echoed)
    assert secret not in masked
    assert "***" in masked
    assert masked.startswith("upstream said: ")  # the rest of the message stays readable


def test_ordinary_service_text_is_left_alone():
    text = "Run 4f1c failed in task predict: ValueError: no rows for 2026-11-27 (see the log)"
    assert redact_shapes(text) == text
