"""botops_values.describe_answer: a bot's last answer in a message, as JSON, never a Python repr."""

from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


def test_an_http_answer_reads_as_a_status_and_its_json_body():
    observed = [{"status": 503, "body": {"status": "unhealthy", "services": {"price_feed": {"status": "down"}}},
                 "expected": "HTTP 200"}]
    text = describe_answer(observed)
    assert text.startswith('HTTP 503 (expected HTTP 200): {"status": "unhealthy", "services": {"price_feed"')
    assert "{'" not in text and "'status'" not in text


def test_errors_other_values_and_long_bodies():
    assert describe_answer({"status": None, "error": "connection refused"}) == "HTTP None: connection refused"
    assert describe_answer([{"check": "process", "running": False}]) == '{"check": "process", "running": false}'
    assert describe_answer([]) == "none"
    long = describe_answer({"status": 200, "body": {"x": "y" * 1000}})
    assert long.endswith("...") and len(long) < 300
