"""detectron2's ``StandardROIHeads`` with at most N foreground RoIs per image for the mask head
in training.

The mask head trains on every foreground proposal of the box head's sample: up to
``positive_fraction * batch_size_per_image`` RoIs per image (32 in the Synthetic config) once
the RPN has learnt, however few objects the image holds. Most of them are near-copies around
the same few objects, and on a CPU they make the mask head the largest of the RoI heads in a
training step (its convolutions and their backward at every RoI; the Synthetic config's box
head is two linear layers). A
uniform random subset per image estimates that image's mean mask loss without bias at a
fraction of the cost. Across images the weighting changes: the loss is still the mean over the
RoIs kept, so an image with many foreground RoIs now counts at most N of them against another
image's few. Inference is unchanged.
"""

from __future__ import annotations

import torch
from detectron2.modeling.roi_heads import StandardROIHeads, select_foreground_proposals
from detectron2.structures import Instances

__all__ = ["MaskSampledROIHeads", "sample_instances"]


def sample_instances(instances: Instances, limit: int) -> Instances:
    """At most ``limit`` of ``instances``, drawn at random without replacement (torch's global
    generator, so seeded runs repeat), in their original order; all of them if there are no
    more than ``limit``."""
    if len(instances) <= limit:
        return instances
    keep = torch.randperm(len(instances), device=instances.proposal_boxes.device)[:limit]
    return instances[keep.sort().values]


class MaskSampledROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose mask head trains on at most ``mask_rois_per_image`` of each
    image's foreground proposals (None: all of them, detectron2's behaviour)."""

    def __init__(self, *, mask_rois_per_image: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if mask_rois_per_image is not None and mask_rois_per_image < 1:
            raise ValueError(f"mask_rois_per_image must be >= 1 or None, not {mask_rois_per_image}")
        self.mask_rois_per_image = mask_rois_per_image

    def _forward_mask(self, features: dict[str, torch.Tensor], instances: list[Instances]):
        if self.training and self.mask_on and self.mask_rois_per_image is not None:
            foreground, _ = select_foreground_proposals(instances, self.num_classes)
            instances = [sample_instances(x, self.mask_rois_per_image) for x in foreground]
        return super()._forward_mask(features, instances)
