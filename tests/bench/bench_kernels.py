"""The compiled-kernel candidates of issue 29 on one micro-benchmark, before choosing.

    python tests/bench/bench_kernels.py --steps 300 --repeats 3

One step of MF with bias (dim 32, 100,000 products, batches of 2,048
anchors with a positive and 5 per-row negatives, binary labels, L2 on the
touched rows), done three ways on one thread, from the same batches:

- ``torch``: today's fused step (``pairs.steps.FusedStep``): some fifteen
  torch operations over (batch, 1 + k, dim) tensors, then the lazy Adam;
- ``numba``: one loop over the samples that sums each touched row's gradient,
  then one over the touched rows that applies Adam, each row a record
  ``[w | m | v]`` (weights and both moments side by side), float32 math;
- ``c++``: the same loops in C++, built by ``torch.utils.cpp_extension``
  (``-O3 -march=native -ffast-math``), when a compiler is present.

Before timing, each kernel's weights after three steps are checked against
the torch step's (the same objective and update). Prints one JSON line per
candidate and repeat: samples a second (a sample is one scored pair), and
the first call's seconds (the JIT or the build).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time

import numpy as np
import torch
from numba import float32, njit

from recsys_stream.core.losses import LOSSES
from recsys_stream.pairs.models import build_model
from recsys_stream.pairs.steps import FusedStep
from recsys_stream.pairs.stream import Batch

PRODUCTS, DIM, ANCHORS, NEGATIVES = 100_000, 32, 2048, 5
LR, L2, BETAS, EPS = 0.01, 1e-4, (0.9, 0.999), 1e-8
WARMUP = 20  # steps before the clock starts


@njit(cache=True, fastmath=True, error_model="numpy", boundscheck=False)
def records_step(R, BR, G, anchor, others, slot, rows, grad, lr, l2, step, b1, b2, eps):
    """One batch: the mean binary cross-entropy's gradient summed per touched row (with
    2 x l2 / samples x the row per occurrence), then Adam on those rows. ``R``: (V, 3d)
    records [w | m | v]; ``BR``: (V, 3) the bias's; ``G``: (3,) the global bias's."""
    d = R.shape[1] // 3
    total = others.shape[0] * others.shape[1]
    decay, inv = float32(2.0 * l2 / total), float32(1.0 / total)
    n = 0
    for i in range(others.shape[0]):
        for j in range(-1, others.shape[1]):
            row = anchor[i] if j < 0 else others[i, j]
            if slot[row] < 0:
                slot[row], rows[n] = n, row
                grad[n, :] = 0
                n += 1
    global_grad = float32(0.0)
    for i in range(others.shape[0]):
        a = anchor[i]
        ga = slot[a]
        for j in range(others.shape[1]):
            o = others[i, j]
            go = slot[o]
            score = BR[a, 0] + BR[o, 0] + G[0]
            for x in range(d):
                score += R[a, x] * R[o, x]
            target = float32(1.0) if j == 0 else float32(0.0)
            dlogit = (float32(1.0) / (float32(1.0) + math.exp(-score)) - target) * inv
            for x in range(d):
                grad[ga, x] += dlogit * R[o, x] + decay * R[a, x]
                grad[go, x] += dlogit * R[a, x] + decay * R[o, x]
            grad[ga, d] += dlogit
            grad[go, d] += dlogit
            global_grad += dlogit
    size = float32(lr * math.sqrt(1 - b2**step) / (1 - b1**step))
    f1, f2, c1, c2, e = float32(b1), float32(b2), float32(1 - b1), float32(1 - b2), float32(eps)
    for r in range(n):
        row = rows[r]
        for x in range(d):
            m = f1 * R[row, d + x] + c1 * grad[r, x]
            v = f2 * R[row, 2 * d + x] + c2 * grad[r, x] * grad[r, x]
            R[row, d + x], R[row, 2 * d + x] = m, v
            R[row, x] -= size * m / (math.sqrt(v) + e)
        m = f1 * BR[row, 1] + c1 * grad[r, d]
        v = f2 * BR[row, 2] + c2 * grad[r, d] * grad[r, d]
        BR[row, 1], BR[row, 2] = m, v
        BR[row, 0] -= size * m / (math.sqrt(v) + e)
        slot[row] = -1
    m = f1 * G[1] + c1 * global_grad
    v = f2 * G[2] + c2 * global_grad * global_grad
    G[1], G[2] = m, v
    G[0] -= size * m / (math.sqrt(v) + e)


CPP = r"""
#include <torch/extension.h>
#include <cmath>
void records_step(torch::Tensor R_, torch::Tensor BR_, torch::Tensor G_, torch::Tensor anchor_,
                  torch::Tensor others_, torch::Tensor slot_, torch::Tensor rows_,
                  torch::Tensor grad_, double lr, double l2, int64_t step, double b1, double b2,
                  double eps) {
  float *R = R_.data_ptr<float>(), *BR = BR_.data_ptr<float>(), *G = G_.data_ptr<float>();
  const int64_t *anchor = anchor_.data_ptr<int64_t>(), *others = others_.data_ptr<int64_t>();
  int64_t *slot = slot_.data_ptr<int64_t>(), *rows = rows_.data_ptr<int64_t>();
  float *grad = grad_.data_ptr<float>();
  const int64_t B = others_.size(0), C = others_.size(1), W = R_.size(1), d = W / 3, GW = d + 1;
  const float decay = 2.0 * l2 / (B * C), inv = 1.0f / (B * C);
  int64_t n = 0;
  auto touch = [&](int64_t id) {
    if (slot[id] >= 0) return;
    slot[id] = n; rows[n] = id;
    std::fill(grad + n * GW, grad + (n + 1) * GW, 0.f);
    ++n;
  };
  for (int64_t i = 0; i < B; ++i) {
    touch(anchor[i]);
    for (int64_t j = 0; j < C; ++j) touch(others[i * C + j]);
  }
  float global_grad = 0.f;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t a = anchor[i]; const float *ea = R + a * W; float *ga = grad + slot[a] * GW;
    for (int64_t j = 0; j < C; ++j) {
      const int64_t o = others[i * C + j];
      const float *eo = R + o * W; float *go = grad + slot[o] * GW;
      float s = BR[a * 3] + BR[o * 3] + G[0];
      for (int64_t x = 0; x < d; ++x) s += ea[x] * eo[x];
      const float dl = (1.f / (1.f + std::exp(-s)) - (j == 0 ? 1.f : 0.f)) * inv;
      for (int64_t x = 0; x < d; ++x) {
        ga[x] += dl * eo[x] + decay * ea[x];
        go[x] += dl * ea[x] + decay * eo[x];
      }
      ga[d] += dl; go[d] += dl; global_grad += dl;
    }
  }
  const float size = lr * std::sqrt(1 - std::pow(b2, step)) / (1 - std::pow(b1, step));
  const float f1 = b1, f2 = b2, c1 = 1 - b1, c2 = 1 - b2, e = eps;
  auto adam = [&](float *w, float *m, float *v, float g) {
    *m = f1 * *m + c1 * g; *v = f2 * *v + c2 * g * g; *w -= size * *m / (std::sqrt(*v) + e);
  };
  for (int64_t r = 0; r < n; ++r) {
    const int64_t row = rows[r]; float *w = R + row * W; const float *g = grad + r * GW;
    for (int64_t x = 0; x < d; ++x) adam(w + x, w + d + x, w + 2 * d + x, g[x]);
    adam(BR + row * 3, BR + row * 3 + 1, BR + row * 3 + 2, g[d]);
    slot[row] = -1;
  }
  adam(G, G + 1, G + 2, global_grad);
}
"""


def batches(steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, PRODUCTS, ANCHORS), rng.integers(0, PRODUCTS, (ANCHORS, 1 + NEGATIVES)))
        for _ in range(steps)
    ]


class Torch:
    """Today's fused step on a fresh mf_bias model."""

    name = "torch"

    def __init__(self):
        self.model = build_model("mf_bias", PRODUCTS, DIM, 0.01, 1)
        self.step = FusedStep(self.model, LOSSES["binary"], L2, 1.0)
        self.weight = torch.ones(ANCHORS)

    def __call__(self, anchor, others, step):
        self.step(Batch(torch.from_numpy(anchor), torch.from_numpy(others), self.weight), LR)

    def weights(self) -> np.ndarray:
        return self.model.embedding.weight.detach().numpy()


class Records:
    """A kernel over row records, started from the torch model's weights."""

    def __init__(self, name: str, step, start: np.ndarray, as_tensor: bool):
        self.name, self.kernel = name, step
        width = 2 + NEGATIVES
        records = np.zeros((PRODUCTS, 3 * DIM), np.float32)
        records[:, :DIM] = start
        arrays = [
            records,
            np.zeros((PRODUCTS, 3), np.float32),
            np.zeros(3, np.float32),
            np.full(PRODUCTS, -1, np.int64),
            np.empty(ANCHORS * width, np.int64),
            np.empty((ANCHORS * width, DIM + 1), np.float32),
        ]
        self.convert = torch.from_numpy if as_tensor else (lambda a: a)
        self.first_seconds = 0.0
        self.R, self.BR, self.G, self.slot, self.rows, self.grad = map(self.convert, arrays)
        self.records = records

    def __call__(self, anchor, others, step):
        self.kernel(
            self.R, self.BR, self.G, self.convert(anchor), self.convert(others), self.slot,
            self.rows, self.grad, LR, L2, step, *BETAS, EPS,
        )  # fmt: skip

    def weights(self) -> np.ndarray:
        return self.records[:, :DIM]


def candidates(start: np.ndarray) -> list:
    """The kernels, each with the seconds its first call took (the JIT, or the build; both
    cached on disk after the first run on a machine)."""
    found = [Records("numba", records_step, start, as_tensor=False)]
    if shutil.which("c++") or shutil.which("g++"):
        from torch.utils.cpp_extension import load_inline

        flags = ["-O3", "-march=native", "-ffast-math"]
        started = time.perf_counter()
        built = load_inline("records_step", CPP, functions=["records_step"], extra_cflags=flags)
        found.append(Records("c++", built.records_step, start, as_tensor=True))
        found[-1].first_seconds = time.perf_counter() - started
    return found


def samples_per_s(run, steps: list) -> float:
    for number, (anchor, others) in enumerate(steps[:WARMUP], 1):
        run(anchor, others, number)
    started = time.perf_counter()
    for number, (anchor, others) in enumerate(steps[WARMUP:], WARMUP + 1):
        run(anchor, others, number)
    return (len(steps) - WARMUP) * ANCHORS * (1 + NEGATIVES) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = batches(args.steps, seed=0)
    reference = Torch()
    start = reference.weights().copy()
    kernels = candidates(start)
    for number, (anchor, others) in enumerate(steps[:3], 1):  # the same update as torch's
        reference(anchor, others, number)
        for kernel in kernels:
            started = time.perf_counter()
            kernel(anchor, others, number)
            kernel.first_seconds += time.perf_counter() - started if number == 1 else 0.0
    differences = {}
    for kernel in kernels:
        differences[kernel.name] = float(np.abs(kernel.weights() - reference.weights()).max())
        if differences[kernel.name] > 1e-3 * LR:
            raise SystemExit(
                f"{kernel.name}: weights differ from torch's by {differences[kernel.name]:.3g}"
            )
    first = {kernel.name: kernel.first_seconds for kernel in kernels}
    for repeat in range(args.repeats):
        for run in [Torch(), *candidates(start)]:
            print(
                json.dumps(
                    {
                        "candidate": run.name,
                        "repeat": repeat,
                        "samples_per_s": round(samples_per_s(run, steps)),
                        "first_call_seconds": round(first.get(run.name, 0.0), 1),
                        "max_weight_difference": differences.get(run.name, 0.0),
                        "threads": 1,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
