"""FlexDetector: recurrent event backbone (+ optional frame branch and FlexFusers) -> PAFPN -> YOLOX head.

The model keeps no hidden state: every call takes and returns the recurrent state as a flat tuple of
tensors, so the same code runs eagerly, trains with BPTT and exports to ONNX (state as graph inputs/outputs).
State layout (see `state_names()`): per event view, (h, c) of the 4 ConvLSTMs (or the S5 states' re, im
parts, same shapes); then, with a frame branch,
the cached frame-branch maps at the fused strides, which let an eager step with `frames=None` reuse the
latest frame's features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from flexdet.errors import ConfigError
from flexdet.models.config import ModelConfig
from flexdet.models.event_backbone import STRIDES, EventBackbone
from flexdet.models.frame_backbone import FrameBackbone
from flexdet.models.fusion import FlexFuser, load_balancing_loss
from flexdet.models.head import YOLOXHead, anchor_points, decode_boxes
from flexdet.models.losses import detection_loss
from flexdet.models.neck import PAFPN
from flexdet.models.postprocess import postprocess
from flexdet.models.s5 import set_step_scale
from flexdet.models.spectral import AdaptiveFrequencyFilter

HEAD_STRIDES = (8, 16, 32)
DetectionBatch = list[dict[str, torch.Tensor]]


class FlexDetector(nn.Module):
    """Streaming event (+RGB) object detector. Build it with `flexdet.models.build_model`.

    Example:
        model = build_model("nano", num_classes=2, use_frames=False).eval()
        state = None
        for hist in histograms:                      # (1, 20, H, W) float counts
            detections, state = model(hist, state=state)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.fused_stages = [i for i in range(4) if config.fuse_stages[i]] if config.use_frames else []
        if config.use_frames and not self.fused_stages:
            raise ConfigError("model.use_frames is true but model.fuse_stages fuses no stage")
        self.event_backbone = EventBackbone(config) if config.use_events else None
        self.frame_backbone = None
        self.fusers = nn.ModuleDict()
        if config.use_frames:
            strides = tuple(STRIDES[i] for i in self.fused_stages)
            self.frame_backbone = FrameBackbone(config.frame_backbone, config.frame_fpn_width, strides,
                                                config.frame_weights, config.frame_norm, config.frame_freeze_at)
            for i in self.fused_stages:
                self.fusers[str(i)] = FlexFuser(config.frame_fpn_width, config.widths[i], config.fuser_noise,
                                                  config.fuser_event_bias, config.fuser_rule)
        neck_widths = tuple(config.widths[1:])
        self.neck = PAFPN(neck_widths, config.neck_depth, config.bn_eps)
        self.head = YOLOXHead(neck_widths, config.num_classes, config.head_width, config.bn_eps)

    # ----- state -----
    @property
    def num_views(self) -> int:
        """Event views per step: 2 with dual windows (full + half window), else 1."""
        return 2 if self.config.dual_windows else 1

    @property
    def num_lstm_states(self) -> int:
        """Recurrent (ConvLSTM or S5) tensors at the start of the state tuple (the rest: frame cache)."""
        return 8 * self.num_views

    def state_names(self) -> list[str]:
        """Names of the state tensors, in the order of the state tuple (used for ONNX inputs/outputs)."""
        kinds = ("s5_re", "s5_im") if self.config.recurrence == "s5" else ("lstm_h", "lstm_c")
        names = [f"{view}{kind}{i}" for view in ("", "sub_")[:self.num_views] for i in range(4) for kind in kinds]
        return names + [f"frame_feat_s{STRIDES[i]}" for i in self.fused_stages]

    def set_window_us(self, window_us: int) -> None:
        """Declare the step period the model now runs at: S5 timesteps scale by window_us /
        s5_train_window_us (an export bakes the current scale in); a ConvLSTM has no timestep to scale."""
        set_step_scale(self, window_us / self.config.s5_train_window_us)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size after zero-padding bottom/right to the pad multiple (32 by default)."""
        m = self.config.pad_multiple
        # int(): under ONNX tracing sizes are traced values whose floor division exports as truncation.
        height, width = int(height), int(width)
        return -(-height // m) * m, -(-width // m) * m

    def init_state(self, batch_size: int, height: int, width: int, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, ...]:
        """Zero state for a new sequence of (height, width) inputs (sizes before padding)."""
        hp, wp = self.padded_size(height, width)
        device = device if device is not None else next(self.parameters()).device
        lstm = [torch.zeros(batch_size, c, hp // s, wp // s, device=device)
                for _ in range(self.num_views) for c, s in zip(self.config.widths, STRIDES) for _ in range(2)]
        frames = [torch.zeros(batch_size, self.config.frame_fpn_width, hp // STRIDES[i], wp // STRIDES[i],
                              device=device) for i in self.fused_stages]
        return tuple(lstm + frames)

    # ----- forward paths -----
    def forward(self, events: torch.Tensor, frames: torch.Tensor | None = None,
                state: tuple[torch.Tensor, ...] | None = None, events_sub: torch.Tensor | None = None
                ) -> tuple[DetectionBatch, tuple[torch.Tensor, ...]]:
        """One streaming step. events (B, C, H, W) float counts; frames (B, 3, H, W) in [0, 1] or None (reuse
        the cached features of the last frame); state None (new sequence) or the previous step's state.
        With dual windows, pass the sub-window histogram as `events_sub`. Returns (detections, new_state).
        Events and frames are zero-padded bottom/right to a multiple of 32 inside (after the frame's
        normalisation), as RVT's InputPadderFromShape and detectron2's ImageList do: a converted FlexEvent model
        takes FlexEvent's own x and x_b (20 x 215 x 320 counts) as `events` and `events_sub` and its image, flipped
        to RGB and divided by 255, as `frames`."""
        events = self._join_views(events, events_sub)
        if state is None:
            state = self.init_state(events.shape[0], events.shape[-2], events.shape[-1], events.device)
        logits, new_state, _ = self._step(events, frames, tuple(state))
        raw = self._decode(logits, events.shape[-2], events.shape[-1])
        return self.postprocess(raw), new_state

    def forward_raw(self, events: torch.Tensor, frames: torch.Tensor | None, *state: torch.Tensor
                    ) -> tuple[torch.Tensor, ...]:
        """Exportable step without NMS: returns (raw, *new_state), raw (B, A, 5 + K) =
        [cx, cy, w, h (input px, clipped to the image), objectness prob, class probs]; anchors whose centre
        falls in the padding get objectness 0. With dual windows `events` is [full, half] concatenated on C.

        With a frame branch there are two deployment graphs. `frames` a tensor: the frame branch runs
        inside and its maps replace the cached ones (the cached `frame_feat_*` inputs are then unused and
        ONNX exporters prune them: feed only `state_names()[:num_lstm_states]`). `frames=None`: the cached
        frame maps in the state are used, so a runtime runs `encode_frames` only when a new frame arrives.
        """
        if not state:
            state = self.init_state(events.shape[0], events.shape[-2], events.shape[-1], events.device)
        logits, new_state, _ = self._step(events, frames, tuple(state))
        return (self._decode(logits, events.shape[-2], events.shape[-1]), *new_state)

    def encode_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Frame-branch maps for (B, 3, H, W) frames in [0, 1]: the `frame_feat_*` part of the state."""
        if self.frame_backbone is None:
            raise ConfigError("this model has no frame branch (use_frames is false)")
        return tuple(self.frame_backbone(frames, self.padded_size(frames.shape[-2], frames.shape[-1])))

    def postprocess(self, raw: torch.Tensor, conf_thresh: float | None = None,
                    nms_thresh: float | None = None) -> DetectionBatch:
        """Raw outputs -> list of {boxes xyxy, scores, labels}; thresholds default to the config's."""
        return postprocess(raw, self.config.conf_thresh if conf_thresh is None else conf_thresh,
                           self.config.nms_thresh if nms_thresh is None else nms_thresh, self.config.max_detections,
                           self.config.postprocess_rule)

    # ----- training -----
    def compute_losses(self, events_seq: torch.Tensor, frames_seq: torch.Tensor | None,
                       targets_seq: list[list[dict] | None], state: tuple[torch.Tensor, ...] | None = None,
                       events_sub_seq: torch.Tensor | None = None
                       ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """BPTT over T steps. events_seq (T, B, C, H, W); frames_seq (T, B, 3, H, W) or None; targets_seq: T
        items, None (unlabelled step) or B dicts {boxes (N, 4) xyxy px, labels (N,), optional weights (N,),
        optional bg_weight}. Losses are averaged over labelled steps; the returned state is detached."""
        if len(targets_seq) != events_seq.shape[0]:
            raise ConfigError(f"targets_seq has {len(targets_seq)} steps but events_seq has {events_seq.shape[0]}")
        height, width = events_seq.shape[-2:]
        if state is None:
            state = self.init_state(events_seq.shape[1], height, width, events_seq.device)
        grid, strides = self._anchors(height, width, events_seq.device)
        totals: dict[str, torch.Tensor] = {}
        labelled = 0
        outputs, state = self._clip(events_seq, frames_seq, events_sub_seq, tuple(state))
        for t, (targets, (logits, gate_weights)) in enumerate(zip(targets_seq, outputs)):
            if targets is None:
                continue
            if len(targets) != events_seq.shape[1]:
                raise ConfigError(f"targets_seq[{t}] has {len(targets)} items for a batch of {events_seq.shape[1]}")
            losses = detection_loss(logits, grid, strides, targets, self.config.iou_weight, self.config.use_l1,
                                    self.config.center_radius)
            if gate_weights:
                balance = sum(load_balancing_loss(w) for w in gate_weights) * self.config.balance_loss_weight
                losses["balance"] = balance
                losses["total"] = losses["total"] + balance
            for name, value in losses.items():
                totals[name] = totals.get(name, 0) + value
            labelled += 1
        if labelled == 0:
            totals = {"total": sum(p.sum() for p in self.parameters()) * 0.0}
        else:
            totals = {name: value / labelled for name, value in totals.items()}
        return totals, tuple(s.detach() for s in state)

    # ----- switches -----
    def set_spectral_impl(self, impl: str) -> None:
        """Switch every spectral filter between "fft" (training) and "matmul" (export); weights are shared."""
        self.config.spectral_impl = impl
        self.config.validate()
        for module in self.modules():
            if isinstance(module, AdaptiveFrequencyFilter):
                module.impl = impl

    # ----- internals -----
    def _join_views(self, events: torch.Tensor, events_sub: torch.Tensor | None) -> torch.Tensor:
        if events_sub is not None:
            if not self.config.dual_windows:
                raise ConfigError("events_sub given but model.dual_windows is false")
            return torch.cat([events, events_sub], dim=1)
        return events

    def _clip(self, events_seq: torch.Tensor, frames_seq: torch.Tensor | None, events_sub_seq: torch.Tensor | None,
              state: tuple[torch.Tensor, ...]) -> tuple[list[tuple[torch.Tensor, list[torch.Tensor]]],
                                                         tuple[torch.Tensor, ...]]:
        """T training steps -> ([(logits, gate weights)] per step, state after the last). S5 event stages run
        the clip stage by stage with the parallel scan (equal to stepping); a ConvLSTM steps through it."""
        views = [self._join_views(events_seq[t], None if events_sub_seq is None else events_sub_seq[t])
                 for t in range(events_seq.shape[0])]
        if self.config.recurrence != "s5" or self.event_backbone is None:
            outputs = []
            for t, events in enumerate(views):
                logits, state, gate_weights = self._step(events, None if frames_seq is None else frames_seq[t], state)
                outputs.append((logits, gate_weights))
            return outputs, state
        prepared = [self._prepare(events, None if frames_seq is None else frames_seq[t], state)
                    for t, events in enumerate(views)]
        clip = torch.stack([events for events, _ in prepared])
        per_view, new_lstm = [], []
        for view, view_clip in enumerate(clip.chunk(self.num_views, dim=2)):
            features, view_state = self.event_backbone.forward_sequence(view_clip, list(state[8 * view:8 * view + 8]))
            per_view.append(features)
            new_lstm += view_state
        outputs, frame_maps = [], list(state[self.num_lstm_states:])
        for t, (_, maps) in enumerate(prepared):
            frame_maps = maps if maps is not None else frame_maps
            outputs.append(self._detect([[f[t] for f in features] for features in per_view], frame_maps))
        return outputs, tuple(new_lstm + list(frame_maps))

    def _prepare(self, events: torch.Tensor, frames: torch.Tensor | None, state: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Checked and padded events, and the frame branch's maps of `frames` (None: no new frame)."""
        expected = self.config.in_channels * self.num_views
        if events.dim() != 4 or events.shape[1] != expected:
            raise ConfigError(f"events must be (B, {expected}, H, W) for this model, got {tuple(events.shape)}")
        if len(state) != len(self.state_names()):
            raise ConfigError(f"state has {len(state)} tensors, this model expects {len(self.state_names())}")
        if frames is not None and self.frame_backbone is not None and (
                frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[-2:] != events.shape[-2:]):
            raise ConfigError(f"frames must be (B, 3, {events.shape[-2]}, {events.shape[-1]}) in [0, 1] to match "
                              f"the events, got {tuple(frames.shape)}")
        padded = self.padded_size(events.shape[-2], events.shape[-1])
        events = F.pad(events, (0, padded[1] - events.shape[-1], 0, padded[0] - events.shape[-2]))
        if self.frame_backbone is not None and frames is not None:
            return events, list(self.frame_backbone(frames, padded))
        return events, None

    def _step(self, events: torch.Tensor, frames: torch.Tensor | None, state: tuple[torch.Tensor, ...]
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], list[torch.Tensor]]:
        """One step -> (head logits (B, A, 5 + K), new state, gate weights of every fuser call)."""
        events, frame_maps = self._prepare(events, frames, state)
        lstm_count = self.num_lstm_states
        frame_maps = frame_maps if frame_maps is not None else list(state[lstm_count:])
        if self.event_backbone is None:
            logits, gate_weights = self._detect([], frame_maps)
            return logits, tuple(state[:lstm_count]) + tuple(frame_maps), gate_weights
        per_view, new_lstm = [], []
        for view, view_events in enumerate(events.chunk(self.num_views, dim=1)):
            features, view_state = self.event_backbone(view_events, list(state[8 * view:8 * view + 8]))
            per_view.append(features)
            new_lstm += view_state
        logits, gate_weights = self._detect(per_view, frame_maps)
        return logits, tuple(new_lstm + list(frame_maps)), gate_weights

    def _detect(self, per_view: list[list[torch.Tensor]], frame_maps: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Event stage maps of each view (none: frames-only) fused with the frame maps -> (head logits, gate
        weights of every fuser call)."""
        if not per_view:  # frames-only: the projected frame maps feed the neck
            neck_in = [self.fusers[str(i)].project(frame_maps[k]) for k, i in enumerate(self.fused_stages)]
            return self.head(self.neck(neck_in)), []
        pyramids, gate_weights = [], []
        for features in per_view:
            features = list(features)
            for k, i in enumerate(self.fused_stages):
                features[i], weights = self.fusers[str(i)](frame_maps[k], features[i])
                gate_weights.append(weights)
            pyramids.append(features[1:])
        neck_in = pyramids[0] if len(pyramids) == 1 else [(a + b) / 2 for a, b in zip(*pyramids)]
        return self.head(self.neck(neck_in)), gate_weights

    def _anchors(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        hp, wp = self.padded_size(height, width)
        return anchor_points([(hp // s, wp // s) for s in HEAD_STRIDES], HEAD_STRIDES, device)

    def _decode(self, logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Head logits -> raw (B, A, 5 + K): boxes clipped to the input, objectness 0 for anchors in the pad
        (with clip_to_input false, as RVT: boxes as decoded in padded-input pixels, every anchor kept)."""
        grid, strides = self._anchors(height, width, logits.device)
        if not self.config.clip_to_input:
            boxes = decode_boxes(logits[..., :4], grid, strides)
            return torch.cat([boxes, logits[..., 4:].sigmoid()], dim=-1)
        centers = (grid + 0.5) * strides[:, None]
        inside = ((centers[:, 0] < width) & (centers[:, 1] < height)).to(logits.dtype)
        xyxy = box_convert(decode_boxes(logits[..., :4], grid, strides), "cxcywh", "xyxy")
        x = xyxy[..., 0::2].clamp(0.0, float(width))
        y = xyxy[..., 1::2].clamp(0.0, float(height))
        boxes = box_convert(torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1), "xyxy", "cxcywh")
        objectness = logits[..., 4:5].sigmoid() * inside[:, None]
        return torch.cat([boxes, objectness, logits[..., 5:].sigmoid()], dim=-1)
