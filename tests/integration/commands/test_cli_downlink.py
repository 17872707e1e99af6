"""gsp downlink: a pass written into an inbox record by record, as a receiver does, with the losses asked for."""

from __future__ import annotations

from helpers import make_pass


def test_downlink_writes_the_pass_as_a_growing_part_then_renames_it(tmp_path, tiny_codec, capsys):
    from groundstation.container import PassReader
    from gsp.cli import main

    _, src = make_pass(tmp_path / "src", tiny_codec, "dl-pass")  # 2 x 3 tiles
    inbox = tmp_path / "inbox"
    assert main(["downlink", str(src), str(inbox), "--duration", "0.3", "--drop", "1", "--corrupt", "4"]) == 0
    assert "5 records" in capsys.readouterr().out
    assert not (inbox / "dl-pass.gsp.part").exists()
    scan = PassReader(inbox / "dl-pass.gsp").scan()
    lost = {t: p.reason for t, p in scan.lost_tiles().items()}
    assert lost == {1: "missing", 4: "crc_mismatch"} and scan.trailer
    # the same pass, cut short by a receiver that died: no rename, the last record half written
    assert main(["downlink", str(src), str(inbox), "--cut-after", "2", "--no-rename", "--name", "cut.gsp"]) == 0
    part = PassReader(inbox / "cut.gsp.part").scan()
    assert sorted(part.records) == [0, 1] and part.lost_tiles()[2].reason == "truncated" and not part.trailer
    assert main(["downlink", str(src), str(inbox), "--drop", "x"]) == 2  # a clear error, nothing written
