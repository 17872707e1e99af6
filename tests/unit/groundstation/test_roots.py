"""The station's roots: the one check that a path lies under them (symlinks followed, `..` collapsed)."""

from __future__ import annotations

import os

import pytest

from groundstation.config import RootsConfig, StationConfig, load_station
from groundstation.roots import KINDS, PathNotAllowed, StationRoots


@pytest.fixture
def roots(tmp_path):
    home = tmp_path / "station"
    for name in ("inbox", "archive", "products", "runs", "weights"):
        (home / name).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.gsp").write_bytes(b"not yours")
    return StationRoots.from_config(RootsConfig(home=str(home)).anchored(tmp_path)), home


def test_paths_under_their_roots_are_resolved(roots, tmp_path):
    r, home = roots
    assert r.check("pass_path", home / "inbox" / "p.gsp", "pass") == home.resolve() / "inbox" / "p.gsp"
    assert r.check("pass_path", str(home / "archive" / "2024" / "p.gsp"), "pass").parent.name == "2024"
    assert r.check("out_dir", home / "products", "products") == (home / "products").resolve()
    assert r.check("out_dir", home / "products" / "new" / "deeper", "products").name == "deeper"  # need not exist
    (home / "archive" / "today").symlink_to(home / "archive" / "2024", target_is_directory=True)
    assert r.check("pass_path", home / "archive" / "today" / "p.gsp", "pass") == \
        home.resolve() / "archive" / "2024" / "p.gsp"  # a symlink inside the roots is fine


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-file", "symlink-dir", "wrong-root", "relative",
                                  "empty", "prefix-sibling"])
def test_paths_outside_are_refused_with_what_to_do(roots, tmp_path, case):
    r, home = roots
    secret = tmp_path / "elsewhere" / "secret.gsp"
    (home / "inbox-evil").mkdir()  # shares a prefix with the inbox root, is not under it
    value, kind = {
        "dotdot": (f"{home}/inbox/../../elsewhere/secret.gsp", "pass"),
        "absolute": (str(secret), "pass"),
        "symlink-file": (str(home / "inbox" / "link.gsp"), "pass"),
        "symlink-dir": (str(home / "products" / "out" / "x"), "products"),
        "wrong-root": (str(home / "weights" / "p.gsp"), "pass"),  # a pass is not read from the weights
        "relative": ("inbox/p.gsp", "pass"),
        "empty": ("", "pass"),
        "prefix-sibling": (str(home / "inbox-evil" / "p.gsp"), "pass"),
    }[case]
    (home / "inbox" / "link.gsp").symlink_to(secret)
    (home / "products" / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(PathNotAllowed, match="pass_path|out_dir") as exc:
        r.check("out_dir" if kind == "products" else "pass_path", value, kind)
    msg = str(exc.value)
    assert "inbox (" in msg or "products (" in msg  # names the roots it may use
    if case.startswith("symlink") or case == "dotdot":
        assert "resolves to" in msg and "elsewhere" in msg


def test_every_kind_names_known_roots():
    for kind, names in KINDS.items():
        assert set(names) <= {"inbox", "archive", "products", "runs", "weights"}, kind
    with pytest.raises(ValueError, match="unknown kind"):
        StationRoots({}).check("x", "/x", "nope")


def test_roots_default_to_the_station_folder_and_relative_paths_to_the_station_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert StationConfig().roots.anchored("/irrelevant").products == str(tmp_path / "user" / "gsp-station" /
                                                                         "products")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "station.yaml").write_text("roots:\n  home: st\n  products: /data/products\n"
                                                   "  archive: old\n")
    roots = load_station(tmp_path / "cfg" / "station.yaml").roots
    assert roots.home == str(tmp_path / "cfg" / "st")
    assert roots.products == "/data/products" and roots.archive == str(tmp_path / "cfg" / "st" / "old")
    assert roots.inbox == str(tmp_path / "cfg" / "st" / "inbox") and roots.enforce == "deployments"
    (tmp_path / "cfg" / "bad.yaml").write_text("roots:\n  inbx: /x\n")
    with pytest.raises(Exception, match="inbx"):
        load_station(tmp_path / "cfg" / "bad.yaml")


def test_the_shipped_station_has_roots():
    roots = load_station().roots
    assert all(os.path.isabs(p) for p in roots.paths().values())
    assert roots.enforce == "deployments"
