"""Export: pack the trained model as it would be stored, and check the bytes against the memory model.

Quantized linears become n-bit codes packed into bytes, bf16 block scales (binary: and bf16 block means)
and a bf16 centroid table per tensor (k-means); every other parameter is stored in bf16. The memory model
(docs/method.md §7) predicts ``N_quant·P_w/8 + N_hp·2`` bytes; the packed size differs from it only by the
per-tensor centroid tables and by rounding each tensor's code stream up to a whole byte.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from sweep.contract import EXPORT, atomic_write_bytes
from sweep.quant import Encoded, QuantConfig, QuantLinear, bits_per_weight, decode


def stored_bits(kind: str, bits: int) -> int:
    return {"binary": 1, "ternary": 2}.get(kind, bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (any shape, values < 2^bits) -> uint8 bit stream of ceil(numel·bits/8) bytes."""
    flat = codes.flatten().to(torch.int64)
    shifts = torch.arange(bits, device=flat.device)
    bit_planes = ((flat[:, None] >> shifts) & 1).to(torch.uint8).flatten()  # (numel·bits,), LSB first
    pad = (-len(bit_planes)) % 8
    bit_planes = torch.cat([bit_planes, bit_planes.new_zeros(pad)]).view(-1, 8)  # (bytes, 8)
    weights = (2 ** torch.arange(8, device=flat.device)).to(torch.uint8)
    return (bit_planes * weights).sum(-1, dtype=torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    bit_planes = ((packed[:, None].to(torch.int64) >> torch.arange(8, device=packed.device)) & 1).flatten()
    bit_planes = bit_planes[: numel * bits].view(numel, bits)  # (numel, bits)
    return (bit_planes << torch.arange(bits, device=packed.device)).sum(-1)


def pack_linear(module: QuantLinear) -> dict[str, Any]:
    enc = module.encode()
    bits = stored_bits(module.kind, module.bits)
    entry = {"kind": module.kind, "bits": module.bits, "block_size": module.block_size,
             "shape": tuple(module.weight.shape), "codes": pack_codes(enc.codes, bits).cpu(),
             "scales": enc.scales.to(torch.bfloat16).cpu()}
    if enc.means is not None:
        entry["means"] = enc.means.to(torch.bfloat16).cpu()
    if enc.centroids is not None:
        entry["centroids"] = enc.centroids.to(torch.bfloat16).cpu()
    return entry


def unpack_linear(entry: dict[str, Any]) -> torch.Tensor:
    """The dequantized weight (out, in) in fp32: equal to the fake-quantized weight used in training."""
    out_features, in_features = entry["shape"]
    bits = stored_bits(entry["kind"], entry["bits"])
    codes = unpack_codes(entry["codes"], bits, out_features * in_features).view(out_features, in_features)
    enc = Encoded(codes, entry["scales"].float(),
                  means=entry["means"].float() if "means" in entry else None,
                  centroids=entry["centroids"].float() if "centroids" in entry else None)
    return decode(enc, entry["kind"], entry["bits"], entry["block_size"])


def entry_bytes(entry: dict[str, Any]) -> dict[str, int]:
    sizes = {"codes": entry["codes"].numel(), "scales": 2 * entry["scales"].numel(),
             "means": 2 * entry["means"].numel() if "means" in entry else 0,
             "centroids": 2 * entry["centroids"].numel() if "centroids" in entry else 0}
    return sizes


@torch.no_grad()
def export(model: torch.nn.Module, quantized: list[tuple[str, QuantLinear]], config: QuantConfig,
           counts: dict[str, int], out_dir: Path | None) -> dict[str, Any]:
    """Pack the model; write ``export.pt`` into out_dir (if given); return the byte accounting."""
    linears = {name: pack_linear(module) for name, module in quantized}
    quantized_weights = {f"{name}.weight" for name in linears}
    high_precision = {name: p.detach().to(torch.bfloat16).cpu() for name, p in model.named_parameters()
                      if name not in quantized_weights}
    breakdown = {"codes": 0, "scales": 0, "means": 0, "centroids": 0}
    for entry in linears.values():
        for key, size in entry_bytes(entry).items():
            breakdown[key] += size
    breakdown["high_precision"] = 2 * sum(t.numel() for t in high_precision.values())
    packed = sum(breakdown.values())
    p_w = bits_per_weight(config.format, config.bits, config.block_size, config.binary_mean)
    predicted = counts["N_quant"] * p_w / 8 \
        + counts["N_hp"] * 2
    result = {"packed_bytes": packed, "predicted_bytes": predicted, "bytes": breakdown,
              "difference_bytes": packed - predicted, "file": None}
    if out_dir is not None:
        buffer = io.BytesIO()
        torch.save({"format": config.format, "bits": config.bits, "linears": linears,
                    "high_precision": high_precision}, buffer)
        atomic_write_bytes(Path(out_dir) / EXPORT, buffer.getvalue())
        result["file"] = EXPORT
    return result
