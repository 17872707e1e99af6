"""Image-quality metrics and the tidy tables that record them, one module per concept:

* :mod:`.pixel` - bpp, PSNR, MS-SSIM on uint8 RGB;
* :mod:`.perceptual` - the learned perceptual distance (LPIPS-Alex when its trunk is provisioned, else the
  shipped shift-tolerant LPIPS), named after what computed it;
* :mod:`.seams` - the seam ratio (neighbour steps across codec-tile boundaries over those inside tiles);
* :mod:`.tables` - per-tile rows (with each tile's footprint), per-pass summaries, their Parquet files and the
  station history.
"""

from groundstation.metrics.perceptual import (ALEXNET_FILENAME, BACKBONE_DIR_ENV, PerceptualMetric,
                                              find_alexnet_backbone)
from groundstation.metrics.pixel import MS_SSIM_MIN_SIDE, MsSsim, bpp, ms_ssim, mse, psnr_db, psnr_from_mse
from groundstation.metrics.seams import SeamStats, seam_ratio, seam_stats
from groundstation.metrics.tables import (HISTORY_KEY, PASS_SCHEMA, PRODUCTS, TILE_BOUNDS_COLUMNS, TILE_SCHEMA,
                                          TileMetrics, add_tile_bounds, append_history, evaluate_tile, read_parquet,
                                          summarize_passes, tiles_frame, write_parquet)

__all__ = ["ALEXNET_FILENAME", "BACKBONE_DIR_ENV", "HISTORY_KEY", "MS_SSIM_MIN_SIDE", "MsSsim", "PASS_SCHEMA",
           "PRODUCTS", "PerceptualMetric", "SeamStats", "TILE_BOUNDS_COLUMNS", "TILE_SCHEMA", "TileMetrics", "add_tile_bounds",
           "append_history", "bpp", "evaluate_tile", "find_alexnet_backbone", "ms_ssim", "mse", "psnr_db", "psnr_from_mse", "read_parquet",
           "seam_ratio", "seam_stats", "summarize_passes", "tiles_frame", "write_parquet"]
