"""SSM (Zubić et al., CVPR 2024) S5 weights as flexdet S5 blocks with the same outputs.

SSM's S5-ViT is RVT's MaxViT backbone with each stage's ConvLSTM replaced by an S5Block, so a released
checkpoint is RVT's tensors plus `backbone.stages.{i}.s5_block.*` (no ConvLSTM); flexdet.convert.rvt converts
it (same sizes, datasets, input and post-processing) and this module maps the S5 part. The official layer keeps
Λ, B and C as (…, 2) re/im pairs like flexdet's S5, discretises bilinearly and rescales nothing at training
time, hence `SSM_OPTIONS`.
"""

from __future__ import annotations

import re

import torch

from flexdet.errors import CheckpointError

SSM_OPTIONS = {"recurrence": "s5", "s5_discretization": "bilinear", "s5_bandlimit": 0.5,
               "s5_bandlimit_dynamic": False, "s5_train_window_us": 50_000}
_BLOCK_KEYS = {"s5.seq.Lambda": "ssm.lambda_", "s5.seq.B": "ssm.b", "s5.seq.C": "ssm.c", "s5.seq.D": "ssm.d",
               "s5.seq.log_step": "ssm.log_step", "attn_norm.weight": "norm.weight", "attn_norm.bias": "norm.bias",
               "ff_enc.weight": "ff_enc.weight", "ff_dec.weight": "ff_dec.weight",
               "ff_norm.weight": "ff_norm.weight", "ff_norm.bias": "ff_norm.bias"}
SIZES = {32: "S5-ViT-T", 48: "S5-ViT-S", 64: "S5-ViT-B"}  # embed_dim -> name (SSM released S and B)
STAGE_KEY = re.compile(r"^backbone\.stages\.(\d+)\.s5_block\.(.+)$")


def is_s5_vit(weights: dict[str, torch.Tensor]) -> bool:
    """Whether RVT-shaped weights (keys without Lightning's 'mdl.') carry S5 blocks, i.e. come from SSM."""
    return any(STAGE_KEY.match(key) for key in weights)


def map_s5_block(source: str, weights: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Official S5Block tensors under `prefix` -> flexdet S5Block state dict; checks every key and shape
    (a bidirectional or low-rank block, which flexdet does not implement, fails here)."""
    unknown = sorted(k for k in weights if k.startswith(prefix) and k[len(prefix):] not in _BLOCK_KEYS)
    if unknown:
        raise CheckpointError(f"{source}: S5 block tensors flexdet cannot place (a variant it does not support): "
                              f"{unknown[:5]}")
    out = {}
    for key, target in _BLOCK_KEYS.items():
        if prefix + key not in weights:
            raise CheckpointError(f"{source}: S5 block lacks '{prefix + key}' (a factorised or unknown variant?)")
        out[target] = weights[prefix + key].detach().float()
    dim = out["norm.weight"].shape[0]
    expected = {"ssm.lambda_": (dim, 2), "ssm.b": (dim, dim, 2), "ssm.c": (dim, dim, 2), "ssm.d": (dim,),
                "ssm.log_step": (dim,), "ff_enc.weight": (2 * dim, dim), "ff_dec.weight": (dim, dim)}
    for target, shape in expected.items():
        if tuple(out[target].shape) != shape:
            raise CheckpointError(f"{source}: S5 tensor for {target} has shape {tuple(out[target].shape)}, "
                                  f"expected {shape} (state size = width, unidirectional, feed-forward x1)")
    return out


def map_s5_stages(source: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every `backbone.stages.{i}.s5_block.*` tensor (checkpoint keys without Lightning's 'mdl.') ->
    `event_backbone.stages.{i}.s5.*` of a FlexDetector built with SSM_OPTIONS."""
    stages = sorted({int(m.group(1)) for m in map(STAGE_KEY.match, weights) if m})
    if stages != [0, 1, 2, 3]:
        raise CheckpointError(f"{source}: expected S5 blocks in backbone stages 0-3, found stages {stages}")
    out = {}
    for stage in stages:
        block = map_s5_block(source, weights, f"backbone.stages.{stage}.s5_block.")
        out.update({f"event_backbone.stages.{stage}.s5.{key}": value for key, value in block.items()})
    return out
