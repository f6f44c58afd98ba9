"""Published checkpoints of other event-detection projects as flexdet models (read without running pickled code)."""

from __future__ import annotations

import os


def convert_checkpoint(path: os.PathLike[str] | str):
    """Any supported published checkpoint (RVT, SSM's S5-ViT, FlexEvent), recognised by its tensors ->
    (ConvertedModel, its InputSpec)."""
    from flexdet.convert import flexevent, rvt
    from flexdet.models.safe_unpickle import load_foreign_checkpoint

    source = os.fspath(path)
    payload = load_foreign_checkpoint(source)
    state = payload.get("state_dict", payload)
    if isinstance(state, dict) and flexevent.is_flexevent(state):
        converted = flexevent.flexevent_from_payload(source, payload)
        return converted, flexevent.input_spec()
    converted = rvt.rvt_from_payload(source, payload)
    return converted, rvt.input_spec(converted)


__all__ = ["convert_checkpoint"]
