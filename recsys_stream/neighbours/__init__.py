"""A run's nearest neighbours: exact blocked top-k, faiss indexes, and the --all tables.

The names here are the command line's choices, kept free of heavy imports so
``--help`` stays quick.
"""

METHODS = ("exact", "tiles", "ann")  # --method: exact; the best-bound tiles only; faiss
DEFAULT_TILE_SHARE = 0.1  # --tile-share: recall@10 0.9975 on 2,048 queries of the 2.17M
# run of the bench (0.76 at 0.05, 0.9997 at 0.2), 2026-12-07
KINDS = ("hnsw", "ivf")  # --index: faiss's graph and inverted-list indexes
DEFAULT_INDEX = "ivf"
