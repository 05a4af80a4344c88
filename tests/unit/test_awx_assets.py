"""The AWX assets (`botops schedule --awx`): a job template with a survey for every fleet operation, the
maintenance schedules, approval workflows for promote, rollback and restore, in the format awxkit's
`awx import` reads (its exportable resources, dependent objects and natural keys, from awxkit itself),
and every survey variable one the playbook reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from botops import maintenance_windows, schedule

REPO = Path(__file__).resolve().parents[2]
api = pytest.importorskip("awxkit.api.pages.api", reason="awxkit (the test extras) checks the import format")
pages = pytest.importorskip("awxkit.api.pages")

CLASSES = {"job_template": "JobTemplate", "workflow_job_template": "WorkflowJobTemplate",
           "workflow_job_template_node": "WorkflowJobTemplateNode", "schedule": "Schedule", "project": "Project",
           "inventory": "Inventory", "execution_environment": "ExecutionEnvironment", "organization": "Organization"}
RELATED = {"survey_spec": "SurveySpec", "schedules": "Schedule", "workflow_nodes": "WorkflowJobTemplateNode",
           "create_approval_template": "WorkflowApprovalTemplate"}


@pytest.fixture(scope="module")
def assets():
    return schedule.awx_assets(maintenance_windows.load())


def check_key(key):
    """A natural key holds its type and exactly the fields awxkit's page class names, recursively."""
    assert isinstance(key, dict) and key.get("type") in CLASSES, key
    fields = getattr(pages, CLASSES[key["type"]]).NATURAL_KEY
    assert set(key) - {"type"} == set(fields), (key, fields)
    for value in key.values():
        if isinstance(value, dict):
            check_key(value)


def test_the_assets_are_in_awxkits_import_format(assets):
    assert set(assets) <= set(api.EXPORTABLE_RESOURCES)
    dependent = set(api.DEPENDENT_EXPORT)
    for resource, items in assets.items():
        for item in items:
            check_key(item["natural_key"])
            owner = CLASSES[item["natural_key"]["type"]]
            for name, value in item.items():
                if isinstance(value, dict) and "type" in value:
                    check_key(value)
            for name, value in item.get("related", {}).items():
                assert (owner, RELATED[name]) in dependent, (owner, name)
                for node in value if name == "workflow_nodes" else []:
                    check_key(node["natural_key"])
                    for rel in node.get("related", {}):
                        assert rel in ("success_nodes", "failure_nodes", "always_nodes") or (
                            ("WorkflowJobTemplateNode", RELATED[rel]) in dependent), rel
                    for linked in node["related"].get("success_nodes", []):
                        check_key(linked)
    assert json.loads((REPO / "awx" / "job_templates.json").read_text()) == assets, "run botops schedule --awx"


def test_every_fleet_operation_has_a_job_template_whose_survey_the_playbook_reads(assets):
    templates = {t["name"]: t for t in assets["job_templates"]}
    operations = yaml.safe_load((REPO / "awx" / "operations.yml").read_text())["operations"]
    assert set(operations) >= {"deploy", "rollback", "restart", "backup", "restore", "kill-switch", "emergency-stop",
                               "promote"}
    sources = "\n".join(p.read_text() for p in list((REPO / "playbooks").rglob("*.yml")) + list((REPO / "roles").rglob("*.yml")))
    for task, op in operations.items():
        template = templates[f"botops {task}"]
        assert (REPO / template["playbook"]).is_file()
        spec = template["related"]["survey_spec"]["spec"]
        assert spec[-1]["variable"] == "botops_hosts" and template["ask_limit_on_launch"]
        for question in spec:
            assert question["variable"] in sources, (task, question["variable"])
            if question["type"] == "multiplechoice":
                assert question["default"] in question["choices"], question
    assert templates["botops maintenance"]["related"]["schedules"]


def test_promote_rollback_and_restore_wait_for_an_approval(assets):
    workflows = {w["name"]: w for w in assets["workflow_job_templates"]}
    assert set(workflows) == {"botops promote (approved)", "botops rollback (approved)", "botops restore (approved)"}
    for name, workflow in workflows.items():
        approval, job = workflow["related"]["workflow_nodes"]
        assert "unified_job_template" not in approval and approval["related"]["create_approval_template"]["name"]
        assert approval["related"]["success_nodes"] == [job["natural_key"]]
        assert job["unified_job_template"]["name"] == name.removesuffix(" (approved)")
