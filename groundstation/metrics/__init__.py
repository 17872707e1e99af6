"""Image-quality metrics and the tidy tables that record them, one module per concept:

* :mod:`.pixel` - bpp, PSNR, MS-SSIM on uint8 RGB;
* :mod:`.perceptual` - the learned perceptual distances (LPIPS-Alex, the primary; LPIPS-VGG; ST-LPIPS-Alex),
  each in a column named after what computed it; :mod:`.lpips_nets` assembles LPIPS from provisioned weights;
* :mod:`.seams` - the seam ratio (neighbour steps across codec-tile boundaries over those inside tiles);
* :mod:`.tables` - per-tile rows (with each tile's footprint), per-pass summaries, their Parquet files and the
  station history.
"""

from groundstation.metrics.lpips_nets import LPIPS_INSTALL, build_lpips
from groundstation.metrics.perceptual import PERCEPTUAL_COLUMNS, PRIMARY, PerceptualMetric
from groundstation.metrics.pixel import MS_SSIM_MIN_SIDE, MsSsim, bpp, ms_ssim, mse, psnr_db, psnr_from_mse
from groundstation.metrics.seams import SeamStats, seam_ratio, seam_stats
from groundstation.metrics.tables import (HISTORY_KEY, PASS_SCHEMA, PRODUCTS, TILE_BOUNDS_COLUMNS, TILE_SCHEMA,
                                          TileMetrics, add_tile_bounds, append_history, evaluate_tile, read_parquet,
                                          summarize_passes, tiles_frame, write_parquet)

__all__ = ["HISTORY_KEY", "LPIPS_INSTALL", "MS_SSIM_MIN_SIDE", "MsSsim", "PASS_SCHEMA", "PERCEPTUAL_COLUMNS",
           "PRIMARY", "PRODUCTS", "PerceptualMetric", "SeamStats", "TILE_BOUNDS_COLUMNS", "TILE_SCHEMA", "TileMetrics",
           "add_tile_bounds", "append_history", "bpp", "build_lpips", "evaluate_tile", "ms_ssim", "mse", "psnr_db",
           "psnr_from_mse", "read_parquet", "seam_ratio", "seam_stats", "summarize_passes", "tiles_frame",
           "write_parquet"]
