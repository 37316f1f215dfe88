"""Issue 13 item 8: add and edit a server with every field, validated by the config's parser.

The dialog builds the JSON object a server has in the config and hands it to
``parse_server_dict``; a refusal shows the parser's message naming the field, and the dialog stays
open. Secrets are password fields, never filled back in, and kept unless the user types new ones.
Offscreen pytest-qt, PySide6 on 3.11+, PySide2 on 3.9/3.10.
"""

from __future__ import annotations

import json

import pytest
from qt_support import require_nuke_binding

require_nuke_binding(needs_pytest_qt=True)

from health_fakes import quick_monitor  # noqa: E402
from qt_support import FakeService, snapshot, status  # noqa: E402

from comfy_cluster.core.cluster import ClusterService  # noqa: E402
from comfy_cluster.core.config.server_json import SERVER_KEYS, parse_server_dict  # noqa: E402
from comfy_cluster.core.errors import ConfigError  # noqa: E402
from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.ui.panel import create_panel_widget  # noqa: E402
from comfy_cluster.ui.qt import QtWidgets  # noqa: E402
from comfy_cluster.ui.server_dialog import ServerDialog  # noqa: E402

TOKEN = "tok-3f9a-very-secret"
HEADER_SECRET = "hdr-77c1-very-secret"
PASSWORD = QtWidgets.QLineEdit.EchoMode.Password


@pytest.fixture
def ca_file(tmp_path):
    path = tmp_path / "studio-ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    return path


@pytest.fixture
def secret_server(ca_file) -> ServerConfig:
    return ServerConfig(
        "gpu-b",
        "gpu-b.studio.lan",
        port=8443,
        scheme="https",
        token=TOKEN,
        headers={"X-Studio-Key": HEADER_SECRET},
        ca_bundle=str(ca_file),
        max_in_flight=2,
        source="user file",
    )


def make(qtbot, existing=None, taken=()) -> ServerDialog:
    dialog = ServerDialog(existing, taken_names=taken)
    qtbot.addWidget(dialog)
    return dialog


def every_text(widget: QtWidgets.QWidget) -> list[str]:
    """Every string the dialog shows or would show (texts, placeholders, tips, title)."""
    texts = [widget.windowTitle(), widget.toolTip()]
    for child in widget.findChildren(QtWidgets.QWidget):
        texts.append(child.toolTip())
        for getter in ("text", "placeholderText", "currentText", "title"):
            value = getattr(child, getter, None)
            if callable(value):
                texts.append(str(value()))
    return texts


# --------------------------------------------------------------------------- every field


def test_add_with_every_field(qtbot, ca_file):
    dialog = make(qtbot)
    dialog.name_edit.setText("gpu2")
    dialog.host_edit.setText("gpu2.studio.lan")
    dialog.port_spin.setValue(9443)
    dialog.scheme_combo.setCurrentText("https")
    dialog.token_edit.setText(TOKEN)
    header = dialog.headers_editor.add_row()
    header.name_edit.setText("X-Studio-Key")
    header.value_edit.setText(HEADER_SECRET)
    dialog.verify_tls_check.setChecked(False)
    dialog.ca_bundle_edit.setText(str(ca_file))
    dialog.dir_local_edit.setText("U:/")
    dialog.dir_remote_edit.setText("/srv/comfy/")
    dialog.priority_spin.setValue(3)
    dialog.max_in_flight_spin.setValue(4)
    dialog.max_download_spin.setValue(512)
    dialog.enabled_check.setChecked(False)
    dialog.tags_edit.setText("a100, night")

    d = dialog.server_dict()
    assert set(d) <= set(SERVER_KEYS)  # the config's own JSON keys, nothing else
    assert set(SERVER_KEYS) - set(d) == {"ip", "url"}  # every field, host given as "host"
    dialog.accept()
    assert dialog.result() == QtWidgets.QDialog.DialogCode.Accepted
    assert dialog.server() == ServerConfig(
        name="gpu2",
        host="gpu2.studio.lan",
        port=9443,
        scheme="https",
        dir_local="U:/",
        dir_remote="/srv/comfy/",
        priority=3,
        enabled=False,
        headers={"X-Studio-Key": HEADER_SECRET},
        token=TOKEN,
        verify_tls=False,
        ca_bundle=str(ca_file),
        max_in_flight=4,
        max_download_bytes=512 << 20,
        tags=("a100", "night"),
        source="panel",
    )


def test_edit_shows_every_field_but_the_secrets(qtbot, secret_server, ca_file):
    dialog = make(qtbot, secret_server, taken=["gpu-b", "gpu-a"])
    assert dialog.windowTitle() == "Edit server 'gpu-b'"
    assert (dialog.name_edit.text(), dialog.host_edit.text()) == ("gpu-b", "gpu-b.studio.lan")
    assert (dialog.port_spin.value(), dialog.scheme_combo.currentText()) == (8443, "https")
    assert dialog.ca_bundle_edit.text() == str(ca_file)
    assert dialog.max_in_flight_spin.value() == 2
    assert [row.name_edit.text() for row in dialog.headers_editor.rows] == ["X-Studio-Key"]
    # Unchanged, the edit gives back the very same server (secrets kept).
    dialog.accept()
    assert dialog.server() == ServerConfig(**{**secret_server.__dict__, "source": "panel"})


def test_a_pasted_url_fills_host_port_and_scheme(qtbot):
    dialog = make(qtbot)
    dialog.host_edit.setText("https://gpu2.example:9000/")
    dialog.host_edit.editingFinished.emit()
    assert dialog.host_edit.text() == "gpu2.example"
    assert (dialog.port_spin.value(), dialog.scheme_combo.currentText()) == (9000, "https")


def test_a_url_left_in_the_host_field_is_given_to_the_parser_as_url(qtbot):
    dialog = make(qtbot)
    dialog.host_edit.setText("https://gpu2.example:9000")
    dialog.accept()
    config = dialog.server()
    assert (config.name, config.url) == ("gpu2.example:9000", "https://gpu2.example:9000")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fill", "field", "label"),
    [
        (lambda d: d.host_edit.setText(""), "host", "Host"),
        (lambda d: d.host_edit.setText("gpu 2/x"), "host", "Host"),
        (lambda d: d.host_edit.setText("10.0.0.5:8188"), "host", "Host"),
        (lambda d: d.ca_bundle_edit.setText("certs/ca.pem"), "ca_bundle", "CA bundle"),
        (lambda d: d.ca_bundle_edit.setText("/no/such/ca.pem"), "ca_bundle", "CA bundle"),
        (lambda d: d.host_edit.setText("ftp://gpu2"), "url", "Host"),
    ],
)
def test_a_bad_field_shows_the_parsers_message_and_keeps_the_dialog_open(qtbot, fill, field, label):
    dialog = make(qtbot)
    dialog.name_edit.setText("gpu2")
    dialog.host_edit.setText("10.0.0.5")
    fill(dialog)
    with pytest.raises(ConfigError) as expected:
        parse_server_dict(dialog.server_dict(), "panel")  # the config's own verdict
    assert expected.value.field == field
    dialog.show()
    dialog.accept()
    assert dialog.isVisible() and dialog.server() is None  # still open, nothing accepted
    assert not dialog.error_label.isHidden()
    assert dialog.error_label.text() == f"{label}: {expected.value.message}"
    assert dialog.invalid_field == field
    assert "font-weight: bold" in dialog.labels[label].styleSheet()  # the field is marked
    assert dialog.focusWidget() is dialog.field_widget(field)


def test_fixing_the_field_lets_the_dialog_close(qtbot):
    dialog = make(qtbot)
    dialog.host_edit.setText("bad host")
    dialog.show()
    dialog.accept()
    assert dialog.isVisible()
    dialog.host_edit.setText("10.0.0.5")
    dialog.accept()
    assert not dialog.isVisible() and dialog.server().host == "10.0.0.5"


def test_a_name_already_taken_is_refused_when_adding_or_renaming(qtbot, secret_server):
    dialog = make(qtbot, taken=["gpu-a"])
    dialog.name_edit.setText("gpu-a")
    dialog.host_edit.setText("10.0.0.9")
    dialog.accept()
    assert dialog.server() is None and dialog.invalid_field == "name"
    assert "already exists" in dialog.error_label.text()
    editing = make(qtbot, secret_server, taken=["gpu-a", "gpu-b"])
    editing.accept()  # keeping its own name is fine
    assert editing.server() is not None
    renaming = make(qtbot, secret_server, taken=["gpu-a", "gpu-b"])
    renaming.name_edit.setText("gpu-a")
    renaming.accept()
    assert renaming.server() is None and renaming.invalid_field == "name"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("", "orphan-value", "no name"), ("X-New", "", "has no value")],
)
def test_header_rows_are_checked(qtbot, key, value, message):
    dialog = make(qtbot)
    dialog.host_edit.setText("10.0.0.5")
    row = dialog.headers_editor.add_row()
    row.name_edit.setText(key)
    row.value_edit.setText(value)
    dialog.accept()
    assert dialog.server() is None and dialog.invalid_field == "headers"
    assert dialog.focusWidget() is row.name_edit
    assert message in dialog.error_label.text() and "Headers" in dialog.error_label.text()
    assert "orphan-value" not in dialog.error_label.text()


def test_an_error_message_never_echoes_a_secret(qtbot, secret_server):
    dialog = make(qtbot, secret_server)
    dialog.show_error(ConfigError(f"bad value {TOKEN!r}", field="token"))
    assert TOKEN not in dialog.error_label.text() and "***" in dialog.error_label.text()


# --------------------------------------------------------------------------- secrets


def test_secrets_are_masked_and_never_shown_back(qtbot, secret_server):
    dialog = make(qtbot, secret_server)
    header = dialog.headers_editor.rows[0]
    assert dialog.token_edit.echoMode() == PASSWORD
    assert header.value_edit.echoMode() == PASSWORD
    assert dialog.token_edit.text() == "" and header.value_edit.text() == ""
    assert "unchanged" in dialog.token_edit.placeholderText()
    assert "unchanged" in header.value_edit.placeholderText()
    shown = "\n".join(every_text(dialog))
    assert TOKEN not in shown and HEADER_SECRET not in shown
    new_row = dialog.headers_editor.add_row()
    assert new_row.value_edit.echoMode() == PASSWORD


def test_editing_keeps_a_secret_unless_a_new_one_is_typed(qtbot, secret_server):
    kept = make(qtbot, secret_server)
    kept.priority_spin.setValue(5)
    kept.accept()
    assert kept.server().token == TOKEN
    assert kept.server().headers == {"X-Studio-Key": HEADER_SECRET}

    replaced = make(qtbot, secret_server)
    replaced.token_edit.setText("new-token")
    replaced.headers_editor.rows[0].value_edit.setText("new-header-value")
    replaced.accept()
    assert replaced.server().token == "new-token"
    assert replaced.server().headers == {"X-Studio-Key": "new-header-value"}

    removed = make(qtbot, secret_server)
    removed.clear_token_check.setChecked(True)
    removed.headers_editor.rows[0].remove_button.click()
    removed.accept()
    assert removed.server().token is None and removed.server().headers == {}


def test_adding_has_no_secret_to_keep(qtbot):
    dialog = make(qtbot)
    assert dialog.clear_token_check.isHidden()
    assert "unchanged" not in dialog.token_edit.placeholderText()


# --------------------------------------------------------------------------- the panel


@pytest.fixture
def panel(qtbot, secret_server):
    service = FakeService(
        snapshot(status("gpu-a"), status("gpu-b")),
        servers=(ServerConfig("gpu-a", "10.0.0.5"), secret_server),
    )
    widget = create_panel_widget(service, interval_ms=20)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == 2, timeout=2000)
    return widget


def test_edit_button_edits_the_selected_server(qtbot, panel, secret_server, monkeypatch):
    service = panel.controller.service
    assert not panel.edit_button.isEnabled()  # nothing selected
    asked = []
    edited = ServerConfig("gpu-b", "gpu-b.studio.lan", priority=4, token=TOKEN)
    monkeypatch.setattr(panel, "ask_edited_server", lambda old: asked.append(old) or edited)
    panel.select("gpu-b")
    assert panel.edit_button.isEnabled()
    panel.edit_button.click()
    assert asked == [secret_server]  # the dialog gets the configured server, secrets and all
    assert service.edits() == [("add_server", edited)]


def test_renaming_adds_the_new_name_then_removes_the_old(qtbot, panel, monkeypatch):
    service = panel.controller.service
    renamed = ServerConfig("gpu-b2", "gpu-b.studio.lan")
    monkeypatch.setattr(panel, "ask_edited_server", lambda old: renamed)
    panel.select("gpu-b")
    panel.table.doubleClicked.emit(panel.table.currentIndex())
    assert service.edits() == [("add_server", renamed), ("remove_server", "gpu-b")]


def test_the_panel_asks_with_the_real_dialog(qtbot, panel, monkeypatch):
    seen = []

    def fake_exec(dialog):
        seen.append((dialog.existing, dialog.windowTitle()))
        dialog.host_edit.setText("10.0.0.9")
        dialog.name_edit.setText("gpu-c")
        dialog.accept()
        return dialog.result()

    monkeypatch.setattr(ServerDialog, "exec", fake_exec, raising=False)
    monkeypatch.setattr(ServerDialog, "exec_", fake_exec, raising=False)
    assert panel.ask_new_server() == ServerConfig("gpu-c", "10.0.0.9", source="panel")
    assert seen == [(None, "Add ComfyUI server")]


def test_an_edited_secret_survives_in_the_user_file(qtbot, tmp_path, monkeypatch):
    user_file = tmp_path / "servers.json"
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(user_file))
    monkeypatch.delenv("NUKE_COMFYUI_SERVERS", raising=False)
    with ClusterService(monitor_factory=quick_monitor) as cluster:
        widget = create_panel_widget(cluster, interval_ms=20)
        qtbot.addWidget(widget)
        widget.show()

        def add(_dialog=None):
            dialog = make(qtbot, taken=widget.controller.server_names())
            dialog.name_edit.setText("gpu-t")
            dialog.host_edit.setText("10.0.0.7")
            dialog.token_edit.setText(TOKEN)
            dialog.accept()
            return dialog.server()

        def edit(existing):
            dialog = make(qtbot, existing, taken=widget.controller.server_names())
            dialog.priority_spin.setValue(6)  # the token field is left empty
            dialog.accept()
            return dialog.server()

        monkeypatch.setattr(widget, "ask_new_server", add)
        monkeypatch.setattr(widget, "ask_edited_server", edit)
        widget.add_button.click()
        qtbot.waitUntil(lambda: widget.select("gpu-t"), timeout=2000)
        widget.edit_button.click()
        assert widget.error_label.isHidden(), widget.error_label.text()
        assert cluster.servers()[-1].priority == 6
    saved = json.loads(user_file.read_text(encoding="utf-8"))["added"]["gpu-t"]
    assert (saved["token"], saved["priority"]) == (TOKEN, 6)
