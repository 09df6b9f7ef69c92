"""docker-compose.yml, the Dockerfile and deploy/: checked without Docker, which cannot run here.

What a ``docker compose up`` would trip over is checked against the real pieces: the compose
file parses; every service command and healthcheck is a ``tce`` invocation the real CLI accepts;
ports, AE titles and hosts agree with the mounted configurations, which load with the strict
settings loader; volumes are declared, the media volume is shared (stage 1 writes, stage 2
reads), and stage 1 and stage 2 keep separate key rings. Last, each node is started the way its
container starts it (entrypoint script, mounted configuration, empty state folder) and must
pass its own healthcheck, then stop cleanly on SIGTERM.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.commands.init import render_config
from appliance.settings import Settings, from_mapping, load

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TCE = BIN / "tce"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
NODES = ("stage1", "stage2", "receiver")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage's lines, continuations joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


DOCKERFILE = _dockerfile()
FINAL_STAGE = DOCKERFILE[max(i for i, (op, _) in enumerate(DOCKERFILE) if op == "FROM"):]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in FINAL_STAGE:
        if op == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def mounted_config(service: dict[str, Any]) -> Path:
    """The host file mounted where the image's TCE_CONFIG points."""
    target = image_env()["TCE_CONFIG"]
    [source] = [s for s, t, _ in mounts(service) if t == target]
    return ROOT / source


def config_of(compose: dict[str, Any], name: str) -> Settings:
    return load(mounted_config(services(compose)[name]), environ={})


# --- the compose file --------------------------------------------------------------------------


def test_the_compose_file_has_the_chain_and_a_pacs(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"stage1", "stage2", "receiver", "orthanc"}
    for name in NODES:
        service = services(compose)[name]
        assert service["build"] == "." and service["command"][:2] == [name, "serve"]
        assert service["environment"]["TCE_ROLE"] == name
        assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", NODES)
def test_commands_and_healthchecks_are_valid_tce_invocations(compose: dict[str, Any],
                                                             name: str) -> None:
    service = services(compose)[name]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "tce"
    assert check[2:] == ["status", "--require-running", "--echo"]  # every node answers C-ECHO
    for argv in (service["command"], check[2:]):
        done = subprocess.run([str(TCE), *argv, "--help"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, f"tce {' '.join(argv)} --help: {done.stderr}"
        assert done.stdout.startswith("usage: tce ")


@pytest.mark.parametrize("name", NODES)
def test_the_mounted_configuration_loads_and_is_read_only(compose: dict[str, Any],
                                                          name: str) -> None:
    service = services(compose)[name]
    path = mounted_config(service)
    assert path.is_relative_to(ROOT / "deploy") and path.is_file()
    settings = load(path, environ={})
    assert settings.role == name and name in settings.roles
    [mode] = [m for _s, t, m in mounts(service) if t == image_env()["TCE_CONFIG"]]
    assert mode == "ro"
    # Written from `tce init --role NAME` output: no setting that init would not write.
    init_keys = _keys(yaml.safe_load(render_config(name)))
    assert _keys(yaml.safe_load(path.read_text(encoding="utf-8"))) <= init_keys


def _keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for key, value in data.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= _keys(value, f"{prefix}{key}.")
    return found


@pytest.mark.parametrize("name", ["stage1", "receiver"])
def test_published_ports_are_the_configured_ports(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    config = getattr(config_of(compose, name), name)
    [mapping] = service["ports"]
    host_port, container_port = str(mapping).split(":")[-2:]
    assert int(container_port) == int(host_port) == config.port
    assert config.bind == "0.0.0.0"  # inside the container: reachable through the mapping


def test_stage2_publishes_nothing_and_its_echo_scp_stays_in_the_container(
        compose: dict[str, Any]) -> None:
    """Nothing calls stage 2 but its own healthcheck: no published port, a loopback bind."""
    config, service = config_of(compose, "stage2").stage2, services(compose)["stage2"]
    assert "ports" not in service and "expose" not in service
    assert config.bind == "127.0.0.1" and config.port == 11113


@pytest.mark.parametrize("name", NODES)
def test_each_node_allows_its_healthcheck_to_echo(compose: dict[str, Any], name: str) -> None:
    """``tce status --echo`` calls as TCE_STATUS from inside the container (loopback)."""
    check = services(compose)[name]["healthcheck"]["test"]
    assert "--calling-ae" not in check  # the default, TCE_STATUS
    callers = getattr(config_of(compose, name), name).allowed_callers
    assert not callers or "TCE_STATUS@127.0.0.1" in callers or "TCE_STATUS" in callers


def test_peers_agree_on_hosts_ports_ae_titles_and_networks(compose: dict[str, Any]) -> None:
    every = services(compose)
    stage1, stage2, receiver = (config_of(compose, n) for n in NODES)
    peer = stage2.stage2.receiver
    assert peer.host == "receiver" and peer.port == receiver.receiver.port
    assert peer.ae_title == receiver.receiver.ae_title
    assert stage2.stage2.ae_title in receiver.receiver.allowed_callers

    orthanc = every["orthanc"]["environment"]
    modalities = yaml.safe_load(orthanc["ORTHANC__DICOM_MODALITIES"])
    assert list(modalities.values()) == [[stage1.stage1.ae_title, "stage1", stage1.stage1.port]]
    assert orthanc["ORTHANC__DICOM_AET"] in stage1.stage1.allowed_callers

    def networks(name: str) -> set[str]:
        return set(every[name]["networks"])

    assert networks("stage1") & networks("orthanc") and networks("stage2") & networks("receiver")
    assert not networks("stage1") & networks("stage2")  # only the media volume joins them
    assert set(compose["networks"]) == set().union(*(networks(n) for n in every))


def test_every_named_volume_is_declared_and_used(compose: dict[str, Any]) -> None:
    used = {source for service in services(compose).values()
            for source, _t, _m in mounts(service) if not source.startswith((".", "/"))}
    assert used == set(compose["volumes"])


def test_media_volume_is_written_by_stage1_and_read_by_stage2(compose: dict[str, Any]) -> None:
    every = services(compose)
    stage1, stage2 = config_of(compose, "stage1"), config_of(compose, "stage2")
    [(_s1, target1, mode1)] = [m for m in mounts(every["stage1"]) if m[0] == "media"]
    [(_s2, target2, mode2)] = [m for m in mounts(every["stage2"]) if m[0] == "media"]
    assert (mode1, mode2) == ("rw", "ro")
    assert Path(target1) == stage1.stage1.media_dir
    assert stage2.stage2.media_watch_dir == Path(target2)
    assert not any(m[0] == "media" for m in mounts(every["receiver"]))


def test_each_node_keeps_its_state_and_key_ring_in_its_own_volume(
        compose: dict[str, Any]) -> None:
    home = image_env()["TCE_HOME"]
    volumes = {}
    for name in NODES:
        service, settings = services(compose)[name], config_of(compose, name)
        [source] = [s for s, t, _m in mounts(service) if t == home]
        volumes[name] = source
        assert settings.work_dir == Path(home)
        assert settings.key_ring.is_relative_to(home)
        assert settings.database_url == f"sqlite:///{home}/tce.sqlite3"
        # The key ring is where first-start `tce init TCE_HOME --role NAME` creates it.
        planned = from_mapping(yaml.safe_load(render_config(name)), base_dir=Path(home),
                               environ={})
        assert planned.key_ring == settings.key_ring
    assert len(set(volumes.values())) == len(NODES)
    assert config_of(compose, "stage1").key_ring == config_of(compose, "stage2").key_ring \
        and volumes["stage1"] != volumes["stage2"]  # same path, different volumes


# --- the Dockerfile ----------------------------------------------------------------------------


def test_the_image_is_python_slim_runs_as_a_user_and_enters_through_tce() -> None:
    ops = dict(FINAL_STAGE)
    assert ops["FROM"].startswith("python:3.12-slim")
    user = ops["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert ops["ENTRYPOINT"] == '["tce-entrypoint"]'
    copies = [args.split() for op, args in FINAL_STAGE if op == "COPY"]
    assert ["deploy/entrypoint.sh", "/usr/local/bin/tce-entrypoint"] in copies
    assert "exec tce \"$@\"" in ENTRYPOINT.read_text(encoding="utf-8")
    assert ENTRYPOINT.stat().st_mode & 0o111
    assert any(op == "RUN" and "pip install" in args and "tce-appliance" in args
               for op, args in FINAL_STAGE)


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    sources = [args.split()[:-1] for op, args in DOCKERFILE
               if op == "COPY" and not args.startswith("--from")]
    for source in (s for group in sources for s in group):
        assert (ROOT / source).exists(), source
        assert not any(fnmatch.fnmatch(source, p) or fnmatch.fnmatch(source, p.lstrip("*/"))
                       for p in ignored), f"{source} is excluded by .dockerignore"
    for private in (".venv", "tests", "**/keys", "**/*.sqlite3*", "**/tce.yaml"):
        assert private in ignored


# --- the nodes, started as their containers start them -----------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _container_env(home: Path, role: str, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCE_DATABASE_URL"}
    env.update(TCE_HOME=str(home), TCE_ROLE=role, TCE_CONFIG=str(config),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def test_the_entrypoint_initialises_a_new_volume_once(tmp_path: Path) -> None:
    home = tmp_path / "volume"
    env = _container_env(home, "stage2", tmp_path / "unused.yaml")
    first = subprocess.run(["sh", str(ENTRYPOINT), "--version"], capture_output=True,
                           text=True, env=env, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("tce ")  # init's report goes to stderr
    ring = home / "keys" / "keyring.json"
    assert "created key ring" in first.stderr and ring.stat().st_mode & 0o777 == 0o600
    secret = ring.read_bytes()
    again = subprocess.run(["sh", str(ENTRYPOINT), "--version"], capture_output=True,
                           text=True, env=env, timeout=60, check=False)
    assert again.returncode == 0 and again.stderr == "" and ring.read_bytes() == secret


@pytest.mark.parametrize("name", NODES)
def test_a_node_started_like_its_container_passes_its_healthcheck(
        compose: dict[str, Any], tmp_path: Path, name: str) -> None:
    service = services(compose)[name]
    home, media = tmp_path / "volume", tmp_path / "media"
    media.mkdir()
    data = yaml.safe_load(mounted_config(service).read_text(encoding="utf-8"))
    data["work_dir"] = str(home)
    section = data[name]
    if "port" in section:
        section["port"] = _free_port()
    if name == "stage1":
        section["media_dir"] = str(media)
    if name == "stage2":
        section["media_watch_dir"] = str(media)
        section["poll_seconds"] = 1
    config = tmp_path / "etc" / "tce.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = _container_env(home, name, config)
    check = [str(TCE), *service["healthcheck"]["test"][2:]]

    proc = subprocess.Popen(["sh", str(ENTRYPOINT), *service["command"]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60,
                                  check=False)
            if done.returncode == 0:
                break
            assert proc.poll() is None, f"{name} exited {proc.returncode}"
            assert time.monotonic() < deadline, done.stdout + done.stderr
            time.sleep(0.5)
        assert "C-ECHO: status 0x0000" in done.stdout  # stage 2's Verification SCP too
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert (home / "tce.yaml").is_file()  # initialised by the entrypoint
    assert (home / "keys" / "keyring.json").is_file() == (name != "receiver")
    after = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60,
                           check=False)
    assert after.returncode == 1 and f"{name}: not running (stopped)" in after.stdout
