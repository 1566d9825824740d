"""API keys: shown once, stored as a hash in a file only its owner reads, roles that nest, revocation at once."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from click.testing import CliRunner

from gallery.cli import main
from gallery.errors import GalleryError, InvalidInputError
from gallery.serve.keys import ROLES, KeyStore, role_allows


def test_a_key_is_returned_once_and_only_its_sha256_is_stored(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    token, key = store.create("enrol", name="front desk")
    text = (tmp_path / "keys.json").read_text()
    assert token not in text and token.split("_", 2)[2] not in text
    assert json.loads(text)["keys"][0]["sha256"] == hashlib.sha256(token.encode()).hexdigest() == key.sha256
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert store.verify(token) == key and key.role == "enrol" and key.name == "front desk"


def test_wrong_keys_do_not_verify(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    token, key = store.create("search")
    assert store.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # right id, wrong secret
    assert store.verify(f"gk_{key.id}") is None and store.verify("") is None and store.verify("Bearer " + token) is None
    assert KeyStore(tmp_path / "none.json").verify(token) is None


def test_the_file_keeps_mode_0600_even_under_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        store = KeyStore(tmp_path / "keys.json")
        store.create("search")
        store.create("admin")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert not store.loose_permissions()
    os.chmod(tmp_path / "keys.json", 0o644)
    assert store.loose_permissions()


def test_roles_nest_search_then_enrol_then_admin():
    assert ROLES == ("search", "enrol", "admin")
    allowed = {(r, n) for r in ROLES for n in ROLES if role_allows(r, n)}
    assert allowed == {("search", "search"), ("enrol", "search"), ("enrol", "enrol"),
                       ("admin", "search"), ("admin", "enrol"), ("admin", "admin")}


def test_revoked_keys_stop_verifying_and_other_stores_see_changes_at_once(tmp_path):
    server_view, cli_view = KeyStore(tmp_path / "keys.json"), KeyStore(tmp_path / "keys.json")
    token, key = cli_view.create("admin")
    assert server_view.verify(token) == key  # made after the server read the file
    other, _ = cli_view.create("search")
    cli_view.revoke(key.id)
    assert server_view.verify(token) is None and server_view.verify(other) is not None
    with pytest.raises(InvalidInputError, match="no key with id 'nope'"):
        cli_view.revoke("nope")
    with pytest.raises(InvalidInputError, match="unknown role 'root'"):
        cli_view.create("root")


def test_a_damaged_key_file_is_a_one_line_error(tmp_path):
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(GalleryError, match="not a gallery API key file .*; fix or delete it"):
        KeyStore(tmp_path / "keys.json").keys()


def test_gallery_keys_create_prints_the_key_once_and_list_and_revoke_manage_them(tmp_path):
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "create", "--role", "search", "--name", "kiosk", "-g", str(tmp_path)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("gk_") and "\n" not in token
    assert "only time it is shown" in made.stderr
    assert KeyStore(tmp_path / "api-keys.json").verify(token).role == "search"
    listed = runner.invoke(main, ["keys", "list", "-g", str(tmp_path)])
    key_id = token[3:11]
    assert key_id in listed.output and "search" in listed.output and "kiosk" in listed.output and token not in listed.output
    assert runner.invoke(main, ["keys", "create", "--role", "root", "-g", str(tmp_path)]).exit_code != 0
    revoked = runner.invoke(main, ["keys", "revoke", key_id, "-g", str(tmp_path)])
    assert revoked.exit_code == 0 and KeyStore(tmp_path / "api-keys.json").verify(token) is None
    again = runner.invoke(main, ["keys", "revoke", key_id, "-g", str(tmp_path)])
    assert again.exit_code == 1 and again.output.count("\n") == 1 and f"no key with id '{key_id}'" in again.output
    elsewhere = runner.invoke(main, ["keys", "create", "--role", "admin", "--keys", str(tmp_path / "k" / "other.json")])
    assert elsewhere.exit_code == 0 and (tmp_path / "k" / "other.json").is_file()


def test_a_running_server_obeys_keys_made_and_revoked_with_the_cli(face_server):
    pytest.importorskip("httpx")
    runner = CliRunner()
    token = runner.invoke(main, ["keys", "create", "--role", "enrol", "-g", str(face_server.root)]).stdout.strip()
    with face_server.client() as c:
        bearer = {"Authorization": f"Bearer {token}"}
        assert c.get("/v1/auth", headers=bearer).json()["role"] == "enrol"
        assert runner.invoke(main, ["keys", "revoke", token[3:11], "-g", str(face_server.root)]).exit_code == 0
        assert c.get("/v1/auth", headers=bearer).status_code == 401
