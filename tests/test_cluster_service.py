"""core/cluster.py: the ClusterService behind the panel; edits land in the user file at once."""

from __future__ import annotations

import json
import threading
import time

import pytest
from health_fakes import DownClient, health_threads

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.core.errors import ClosedError, ConfigError
from comfy_cluster.core.health import HealthMonitor, ServerState
from comfy_cluster.core.server import ServerConfig

BASE = [
    {"name": "a", "ip": "10.0.0.5", "priority": 1},
    {"name": "b", "ip": "10.0.0.6", "priority": 2},
]


class FakeMonitor:
    """Records what the service asks of its health monitor; no threads, no network."""

    def __init__(self, servers):
        self.servers = tuple(servers)
        self.calls: list = []
        self.closed = False
        self.active = False

    def start(self):
        self.calls.append("start")

    def close(self, timeout=1.0):
        self.closed = True
        self.calls.append("close")

    def snapshot(self):
        return {"servers": [s.name for s in self.servers]}

    def poll_now(self):
        self.calls.append("poll_now")

    def set_active(self, active, who="default"):
        self.active = active
        self.calls.append(("set_active", active, who))

    def set_servers(self, servers):
        self.servers = tuple(servers)
        self.calls.append(("set_servers", [s.name for s in servers]))


class Monitors:
    """A monitor factory that keeps every monitor it built."""

    def __init__(self):
        self.built: list[FakeMonitor] = []

    def __call__(self, servers):
        monitor = FakeMonitor(servers)
        self.built.append(monitor)
        return monitor


@pytest.fixture
def user_file(tmp_path):
    return tmp_path / "nuke" / "comfy_cluster" / "servers.json"


@pytest.fixture
def env(user_file):
    return {"NUKE_COMFYUI_SERVERS": json.dumps(BASE), "COMFY_CLUSTER_CONFIG": str(user_file)}


@pytest.fixture
def monitors():
    return Monitors()


@pytest.fixture
def service(env, monitors):
    svc = ClusterService(environ=env, monitor_factory=monitors)
    yield svc
    svc.close()


def names(service):
    return [s.name for s in service.servers()]


def saved(user_file):
    return json.loads(user_file.read_text(encoding="utf-8"))


def test_loads_servers_and_starts_one_monitor(service, monitors, user_file):
    assert names(service) == ["a", "b"]
    assert service.user_path == user_file
    assert len(monitors.built) == 1
    assert monitors.built[0].calls == ["start"]
    assert [s.name for s in monitors.built[0].servers] == ["a", "b"]
    assert service.snapshot() == {"servers": ["a", "b"]}
    assert not user_file.exists()  # reading never writes


def test_user_path_comes_from_the_environment_given(env, monitors, user_file, tmp_path):
    other = tmp_path / "other.json"
    with ClusterService(environ=env, user_path=other, monitor_factory=monitors) as svc:
        assert svc.user_path == other
    with ClusterService(environ=env, monitor_factory=monitors) as svc:
        assert svc.user_path == user_file


def test_set_enabled_is_saved_and_reaches_the_monitor(service, monitors, user_file):
    service.set_enabled("b", False)
    assert saved(user_file)["edits"] == {"b": {"enabled": False}}
    assert [s.enabled for s in service.servers()] == [True, False]
    (monitor,) = monitors.built  # the same monitor, given the new list
    assert [s.enabled for s in monitor.servers] == [True, False]
    assert monitor.calls[-2:] == [("set_servers", ["a", "b"]), "poll_now"]


def test_set_priority_is_saved(service, user_file):
    service.set_priority("a", 5)
    assert saved(user_file)["edits"] == {"a": {"priority": 5}}
    assert service.servers()[0].priority == 5


def test_add_and_remove_are_saved(service, user_file, env, monitors):
    service.add_server(ServerConfig(name="c", host="10.0.0.7", port=8190, priority=3))
    doc = saved(user_file)
    assert doc["added"]["c"]["host"] == "10.0.0.7"
    assert doc["added"]["c"]["port"] == 8190
    assert names(service) == ["a", "b", "c"]

    service.remove_server("a")
    assert saved(user_file)["removed"] == ["a"]
    assert names(service) == ["b", "c"]
    # A fresh service (a new Nuke session) sees the same servers.
    with ClusterService(environ=env, monitor_factory=monitors) as again:
        assert names(again) == ["b", "c"]


def test_the_file_is_private(service, user_file):
    service.set_enabled("a", False)
    assert (user_file.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.set_enabled("nope", True),
        lambda s: s.set_priority("nope", 2),
        lambda s: s.remove_server("nope"),
        lambda s: s.set_priority("a", 0),
        lambda s: s.set_enabled("a", "yes"),
    ],
    ids=["enable-unknown", "priority-unknown", "remove-unknown", "priority-zero", "enabled-str"],
)
def test_bad_edits_raise_config_error_and_change_nothing(service, monitors, user_file, edit):
    with pytest.raises(ConfigError):
        edit(service)
    assert not user_file.exists()
    assert names(service) == ["a", "b"]
    assert len(monitors.built) == 1


def test_add_server_needs_a_server_config(service):
    with pytest.raises(TypeError):
        service.add_server({"name": "c", "host": "x"})


def test_watchers_are_counted(service, monitors):
    monitor = monitors.built[0]
    service.set_active(True)
    service.set_active(True)
    service.set_active(False)
    assert monitor.active is True
    service.set_active(False)
    service.set_active(False)  # never below zero
    assert monitor.active is False
    service.set_active(True)
    assert monitor.active is True
    assert monitor.calls[-1] == ("set_active", True, "panels")  # jobs hold it under other names


def test_poll_now_goes_to_the_monitor(service, monitors):
    service.poll_now()
    assert monitors.built[0].calls[-1] == "poll_now"


def test_active_jobs_from_any_thread(service):
    workers = [
        threading.Thread(target=service.report_job, args=(f"s{i}", f"job / chunk {i}"))
        for i in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    jobs = service.active_jobs()
    assert jobs["s3"] == "job / chunk 3" and len(jobs) == 8
    service.report_job("s3", None)
    assert "s3" not in service.active_jobs()
    jobs["s4"] = "mutating the copy"
    assert service.active_jobs()["s4"] == "job / chunk 4"


def test_jobs_report_per_job_and_clear_only_their_own(service):
    service.report_job("a", "Render1 chunk 1 (1-4)", job="j1")
    service.report_job("a", "Render2 chunk 3 (9-12)", job="j2")
    service.report_job("b", "Render1 chunk 2 (5-8)", job="j1")
    assert service.active_jobs() == {
        "a": "Render1 chunk 1 (1-4); Render2 chunk 3 (9-12)",
        "b": "Render1 chunk 2 (5-8)",
    }
    service.report_job("a", "", job="j2")
    assert service.active_jobs()["a"] == "Render1 chunk 1 (1-4)"
    service.report_job("a", "Render2 chunk 4 (13-16)", job="j2")
    service.clear_job("j1")  # j1 ended: only its entries go
    assert service.active_jobs() == {"a": "Render2 chunk 4 (13-16)"}
    service.clear_job("j2")
    service.clear_job("never-reported")
    assert service.active_jobs() == {}


def test_reports_from_many_threads_end_consistent(service):
    def job(n):
        for i in range(200):
            service.report_job(f"s{i % 4}", f"job {n} chunk {i}", job=f"j{n}")
        service.clear_job(f"j{n}")

    workers = [threading.Thread(target=job, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert service.active_jobs() == {}


def test_start_can_be_deferred_and_is_idempotent(env, monitors):
    svc = ClusterService(environ=env, monitor_factory=monitors, start=False)
    try:
        assert monitors.built[0].calls == [] and not svc.started
        svc.start()
        svc.start()
        assert monitors.built[0].calls == ["start"] and svc.started
    finally:
        svc.close()
    svc.start()  # after close: nothing starts
    assert monitors.built[0].calls == ["start", "close"]


def test_reload_picks_up_a_hand_edited_file(service, user_file):
    user_file.parent.mkdir(parents=True, exist_ok=True)
    user_file.write_text(json.dumps({"version": 1, "removed": ["b"]}), encoding="utf-8")
    service.reload()
    assert names(service) == ["a"]


def test_close_is_idempotent_and_stops_edits(service, monitors):
    service.close()
    service.close()
    assert monitors.built[0].calls.count("close") == 1
    assert service.closed
    with pytest.raises(ClosedError):
        service.set_enabled("a", False)
    service.set_active(True)  # harmless after close
    assert names(service) == ["a", "b"]


def test_broken_config_raises_config_error(user_file, monitors):
    env = {"NUKE_COMFYUI_SERVERS": "[{", "COMFY_CLUSTER_CONFIG": str(user_file)}
    with pytest.raises(ConfigError):
        ClusterService(environ=env, monitor_factory=monitors)
    assert monitors.built == []


# --------------------------------------------------------------------------- with the real monitor


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def real_monitor(servers):
    return HealthMonitor(servers, client_factory=DownClient, interval_busy=0.05, timeout=0.5)


def test_real_monitor_follows_edits_and_close_stops_its_threads(env):
    assert health_threads() == []
    svc = ClusterService(environ=env, monitor_factory=real_monitor)
    try:
        assert wait_until(lambda: all(s.checked_at for s in svc.snapshot()))
        assert {s.state for s in svc.snapshot()} == {ServerState.OFFLINE}
        assert "connection refused" in svc.snapshot().get("a").last_error
        assert sorted(t.name for t in health_threads()) == [
            "comfy-cluster-health-a",
            "comfy-cluster-health-b",
        ]
        svc.set_enabled("b", False)
        assert svc.snapshot().get("b").state is ServerState.DISABLED
        svc.add_server(ServerConfig(name="c", host="127.0.0.1", port=9))
        assert "c" in svc.snapshot()
        svc.remove_server("a")
        assert svc.snapshot().names == ("b", "c")
    finally:
        svc.close()
    assert wait_until(lambda: health_threads() == []), health_threads()
