"""Everything offline: the synthetic bank, training sets from Feast, need models and MLflow."""

import os

# LightGBM's OpenMP threads spin while waiting for work; on a small shared machine a spinning
# thread steals the core another one needs, and a fit takes several times as long.
# Set before anything loads the OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
