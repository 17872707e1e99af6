"""The operating-point rule of RULE.md applied to a selection sweep CSV: prints the chosen temperature."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pandas as pd  # noqa: E402
from report import effects  # noqa: E402

MAX_COST_DB = 0.6
df = pd.read_csv(sys.argv[1])
cands = []
for v in df.variant.unique():
    if v.startswith("enh:"):
        e = effects(df, v)
        cands.append((float(v.split("T=")[1]), e["dpsnr"], e["stlpips_alex"]))
ok = [c for c in cands if -c[1] <= MAX_COST_DB]
t = min(ok, key=lambda c: c[2])[0] if ok else max(cands, key=lambda c: c[1])[0]
print(f"{t:g}")
