"""The registry on disk: name and version rules, version numbering, atomic imports and deletes,
the cross-process hosting guard, the default home, and the `project` / `model` commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import openlookout
from l4v_support import write_classification_package, write_segmentation_package
from openlookout import registry as registry_module
from openlookout.cli import main as cli_main
from openlookout.registry import (
    Registry,
    check_client_token,
    check_model_version,
    check_project_name,
    default_home,
)


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("registry-packages")
    return {
        "cls": write_classification_package(root / "cls"),
        "seg": write_segmentation_package(root / "seg"),
    }


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(tmp_path / "home")


# ---- names --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "A9", "parts-line_2", "x" * 255, "0abc"])
def test_valid_project_names(name):
    assert check_project_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "length"),
        ("x" * 256, "length"),
        ("-lead", "pattern"),
        ("_lead", "pattern"),
        ("has space", "pattern"),
        ("a/b", "pattern"),
        ("..", "pattern"),
        ("caf\u00e9", "pattern"),
        (5, "string"),
    ],
)
def test_invalid_project_names(name, problem):
    with pytest.raises(openlookout.ValidationException, match=problem):
        check_project_name(name)


def test_model_versions():
    assert check_model_version("1") == "1"
    assert check_model_version("latest") == "latest"
    assert check_model_version("9999999999") == "9999999999"
    for bad in ("0", "01", "-1", "1.0", "LATEST", "12345678901", "", "latest "):
        with pytest.raises(openlookout.ValidationException):
            check_model_version(bad)
    with pytest.raises(openlookout.ValidationException, match=r"\(\[1-9\]\[0-9\]\*\)"):
        check_model_version("latest", allow_latest=False)


def test_client_tokens():
    assert check_client_token("abc-123") == "abc-123"
    for bad in ("", "a" * 65, "a b", "tok_en"):
        with pytest.raises(openlookout.ValidationException):
            check_client_token(bad)


# ---- projects and versions ----------------------------------------------------------------


def test_projects_create_list_delete(registry):
    assert registry.list_projects() == []
    for name in ("zeta", "alpha", "Mid"):
        registry.create_project(name)
    assert [p.name for p in registry.list_projects()] == ["Mid", "alpha", "zeta"]
    with pytest.raises(openlookout.ConflictException) as conflict:
        registry.create_project("alpha")
    assert conflict.value.resource_type == "PROJECT"
    record = registry.delete_project("alpha")
    assert record.arn == "arn:aws:lookoutvision:local:000000000000:project/alpha"
    with pytest.raises(openlookout.ResourceNotFoundException) as missing:
        registry.get_project("alpha")
    assert (missing.value.resource_id, missing.value.resource_type) == ("alpha", "PROJECT")
    assert [p.name for p in registry.list_projects()] == ["Mid", "zeta"]


def test_versions_are_numbered_and_never_reused(registry, packages):
    registry.create_project("p")
    assert [registry.import_model("p", packages["cls"]).version for _ in range(3)] == [1, 2, 3]
    assert [m.version for m in registry.list_models("p")] == [3, 2, 1]  # newest first
    assert registry.latest_version("p") == 3
    registry.delete_model("p", 3)
    assert registry.latest_version("p") == 2  # `latest` follows the highest existing version
    assert registry.import_model("p", packages["seg"], description="v4.seg").version == 4
    record = registry.resolve("p", "latest")
    assert (record.version, record.description) == (4, "v4.seg")
    assert (record.package / "manifest.json").is_file()
    assert record.arn.endswith(":model/p/4")


def test_unknown_project_and_version(registry, packages):
    with pytest.raises(openlookout.ResourceNotFoundException) as e:
        registry.get_model("nope", 1)
    assert e.value.resource_type == "PROJECT"
    registry.create_project("p")
    with pytest.raises(openlookout.ResourceNotFoundException) as e:
        registry.resolve("p", "latest")
    assert (e.value.resource_type, e.value.resource_id) == ("MODEL", "p/latest")
    registry.import_model("p", packages["cls"])
    with pytest.raises(openlookout.ResourceNotFoundException) as e:
        registry.get_model("p", 2)
    assert (e.value.resource_type, e.value.resource_id) == ("MODEL", "p/2")


def test_project_with_versions_cannot_be_deleted(registry, packages):
    registry.create_project("p")
    registry.import_model("p", packages["cls"])
    with pytest.raises(openlookout.ConflictException, match="delete them first") as e:
        registry.delete_project("p")
    assert e.value.resource_type == "PROJECT"
    registry.delete_model("p", 1)
    registry.delete_project("p")
    assert not (registry.projects_dir / "p").exists()


def test_import_checks_the_package(registry, packages, tmp_path):
    registry.create_project("p")
    with pytest.raises(openlookout.ResourceNotFoundException):
        registry.import_model("p", tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(packages["cls"], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(openlookout.OpenLookoutError):
        registry.import_model("p", broken)
    with pytest.raises(openlookout.ValidationException):
        registry.import_model("p", packages["cls"], description="has spaces")
    assert registry.list_models("p") == []
    # Unchecked, a broken package is imported (and fails when started: HOSTING_FAILED).
    assert registry.import_model("p", broken, check=False).version == 1
    assert not [e for e in os.listdir(registry.projects_dir / "p") if e.startswith(".")]


def test_a_crash_mid_import_leaves_no_version(registry, packages, monkeypatch):
    registry.create_project("p")
    real_rename = os.rename

    def crash(src, dst):
        if Path(dst).parent.name == "models":
            raise KeyboardInterrupt("power cut")  # as if the process died at the publishing step
        real_rename(src, dst)

    monkeypatch.setattr(registry_module.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        registry.import_model("p", packages["cls"])
    monkeypatch.setattr(registry_module.os, "rename", real_rename)
    assert registry.list_models("p") == []
    # A leftover staging directory (a real crash leaves one) is ignored and swept later.
    leftover = registry.projects_dir / "p" / ".staging-deadbeef"
    shutil.copytree(packages["cls"], leftover / "package")
    assert registry.list_models("p") == []
    assert registry.import_model("p", packages["cls"]).version == 1
    assert not leftover.exists()


def test_hosting_lease_blocks_delete_across_processes(registry, packages):
    registry.create_project("p")
    record = registry.import_model("p", packages["cls"])
    lease = registry.lease(record)
    script = (
        "import sys, openlookout\n"
        "from openlookout.registry import Registry\n"
        "try:\n"
        "    Registry(sys.argv[1]).delete_model('p', 1)\n"
        "except openlookout.ConflictException as e:\n"
        "    print('conflict', e.resource_type)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(registry.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert other.stdout.strip() == "conflict MODEL"
    lease.release()
    registry.delete_model("p", 1)
    assert registry.list_models("p") == []


def test_default_home(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENLOOKOUT_HOME", str(tmp_path / "explicit"))
    assert default_home() == tmp_path / "explicit"
    monkeypatch.delenv("OPENLOOKOUT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "openlookout"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_home() == tmp_path / "user" / ".local" / "share" / "openlookout"


def test_on_disk_layout(registry, packages):
    registry.create_project("p")
    registry.import_model("p", packages["cls"], description="first")
    project = json.loads((registry.projects_dir / "p" / "project.json").read_text())
    assert (project["ProjectName"], project["LastModelVersion"]) == ("p", 1)
    model = json.loads((registry.projects_dir / "p" / "models" / "1" / "model.json").read_text())
    assert (model["ModelVersion"], model["Description"]) == ("1", "first")
    assert sorted(os.listdir(registry.projects_dir / "p" / "models" / "1" / "package")) == [
        "manifest.json",
        "model.onnx",
    ]


# ---- the command line -----------------------------------------------------------------------


def test_project_and_model_commands(tmp_path, packages, capsys):
    home = str(tmp_path / "cli-home")

    def run(*args: str) -> tuple[int, str, str]:
        code = cli_main([*args])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("project", "create", "line1", "--home", home)[0] == 0
    assert run("project", "create", "line1", "--home", home)[0] == 1
    code, out, _ = run(
        "model", "import", str(packages["seg"]), "--project", "line1", "--home", home
    )
    assert (code, out.strip()) == (0, f"imported {packages['seg']} as line1 version 1")
    code, out, _ = run(
        "model", "import", str(packages["cls"]), "--project", "line1", "--home", home,
        "--description", "cls", "--json",
    )  # fmt: skip
    assert json.loads(out)["ModelVersion"] == "2"
    code, out, _ = run("model", "list", "--project", "line1", "--home", home, "--json")
    models = json.loads(out)["Models"]
    assert [(m["ModelVersion"], m["Status"]) for m in models] == [
        ("2", "TRAINED"),
        ("1", "TRAINED"),
    ]
    code, out, _ = run("model", "list", "--project", "line1", "--home", home)
    assert out.splitlines()[0].split() == ["VERSION", "STATUS", "CREATED", "DESCRIPTION"]
    code, out, _ = run(
        "model", "describe", "--project", "line1", "--model-version", "latest", "--home", home
    )
    assert "ModelVersion       2" in out
    assert "Description        cls" in out
    code, out, _ = run("project", "list", "--home", home, "--json")
    assert [p["ProjectName"] for p in json.loads(out)["Projects"]] == ["line1"]
    code, out, _ = run("project", "describe", "line1", "--home", home)
    assert "models   2 TRAINED, 1 TRAINED" in out
    code, _, err = run("project", "delete", "line1", "--home", home)
    assert code == 1
    assert "ConflictException" in err
    code, _, err = run("model", "delete", "--project", "line1", "--model-version", "latest",
                       "--home", home)  # fmt: skip
    assert code == 1
    assert "ValidationException" in err  # DeleteModel takes no `latest`
    for version in ("1", "2"):
        assert run("model", "delete", "--project", "line1", "--model-version", version,
                   "--home", home)[0] == 0  # fmt: skip
    assert run("project", "delete", "line1", "--home", home)[0] == 0
    code, _, err = run("project", "describe", "line1", "--home", home)
    assert code == 1
    assert "ResourceNotFoundException" in err


def test_model_start_needs_a_server(tmp_path, capsys):
    # Nothing listens on this port: the command says so instead of pretending to host.
    code = cli_main(
        ["model", "start", "--project", "p", "--model-version", "1",
         "--endpoint", "http://127.0.0.1:9"]
    )  # fmt: skip
    assert code == 1
    assert "cannot reach openlookout" in capsys.readouterr().err
