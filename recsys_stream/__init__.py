"""The PyTorch half of recsys-stream: stream train pairs from Parquet, fit
matrix factorization, evaluate, report and answer "products similar to X"."""
