"""Training SAM on instance annotations: the paper's prompt simulation and losses.

``TrainableSam`` is ``Sam`` (same modules, same state dict: the release's checkpoints load into
it and its checkpoints load into ``Sam`` / ``build_sam``) whose ``forward`` takes a detectron2
batch (``{"image": (3, h, w) uint8 RGB resized so the longest side is ``img_size``,
"instances": gt_masks}``) instead of the release's prompt dicts:

- train mode: for up to ``num_masks_per_image`` ground-truth masks per image, a first prompt (a
  uniform point in the mask or the mask's box with noise, equal odds), then
  ``num_correction_points`` points each drawn uniformly from the error region of the previous
  prediction (label: the ground truth there) with its low-res logits fed back as the mask prompt,
  and ``num_mask_only_iterations`` iterations with the mask prompt alone (the last at the end,
  the others at random places). A first prediction from one point takes the best of the three
  multimask outputs by loss; one from a box (two corner tokens, unambiguous) and later ones the
  single output, as SAM 2's training counts a box as two points (multimask for one point
  only) and as the release's notebooks prompt boxes with ``multimask_output=False``. Losses,
  averaged over masks and iterations: ``loss_mask_focal`` (weight 20), ``loss_mask_dice`` (1),
  ``loss_iou`` (MSE of every used output's predicted IoU against its actual IoU, 1). Masks are
  compared on the low-res grid (4S x 4S, 256 x 256 for the released models) with the ground
  truth area-averaged onto it.
- eval mode: per image ``{"sam": {"box": ..., "point": ..., "click{k}": ...}}`` boolean masks
  (N, h, w) for the ground-truth box (the single output), the centre-most point of the mask
  (the multimask output with the highest predicted IoU) and k deterministic clicks (each at the
  centre-most pixel of the error region), read by
  ``vitdet.sam.evaluation.PromptedMaskEvaluator``.

With ``freeze_image_encoder`` the encoder is fixed (no gradient, eval mode) and the embeddings of
up to ``embedding_cache_size`` images are kept (keyed by the pixels), so a second epoch costs
the heads only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, PolygonMasks

from .image_encoder import SamImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PAD_LABEL, PromptEncoder
from .sam import Sam
from .transformer import Attention

__all__ = [
    "TrainableSam",
    "centre_points",
    "dice_loss",
    "error_points",
    "mask_iou",
    "noisy_boxes",
    "select_min_loss",
    "sigmoid_focal_loss",
    "uniform_points",
]

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # RetinaNet's, as SAM's focal loss


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask focal loss, mean over pixels: logits, targets (..., H, W) -> (...).

    ``alpha * (1 - p_t) ** gamma * BCE`` with alpha 0.25 on the foreground, gamma 2; targets may
    be soft (area-averaged ground truth)."""
    logits, targets = logits.float(), targets.float()
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return (alpha_t * (1 - p_t) ** FOCAL_GAMMA * bce).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask soft dice loss: ``1 - (2 sum(p t) + 1) / (sum p + sum t + 1)``, (..., H, W) ->
    (...)."""
    p, targets = logits.float().sigmoid().flatten(-2), targets.float().flatten(-2)
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks (..., H, W) -> (...); 1 when both are empty."""
    pred, gt = pred.flatten(-2), gt.flatten(-2)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def select_min_loss(losses: torch.Tensor) -> torch.Tensor:
    """(N, M) per-output losses -> (N,) index of each row's smallest (the one back-propagated)."""
    return losses.detach().argmin(dim=1)


def uniform_points(regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel drawn uniformly (torch's global RNG) from each region (N, H, W) bool.

    Returns coords (N, 2) as (x, y) pixel indices (float) and found (N,) bool (False for an empty
    region, whose coords are 0). Draws the rank of the pixel among the region's pixels (one
    uniform number per region; ``torch.multinomial`` costs an exponential per pixel)."""
    flat = regions.flatten(1)
    counts = flat.sum(1)
    found = counts > 0
    rank = (torch.rand(len(flat), device=flat.device) * counts).long()
    rank = torch.minimum(rank, (counts - 1).clamp(min=0))
    # the pixel with `rank` region pixels before it: cumsum (counting it) first exceeds rank
    index = (flat.cumsum(1, dtype=torch.int32) <= rank[:, None]).sum(1)
    index = index.clamp(max=flat.shape[1] - 1)
    w = regions.shape[-1]
    coords = torch.stack([index % w, index // w], dim=1).float()
    return torch.where(found[:, None], coords, torch.zeros_like(coords)), found


def error_points(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A point drawn uniformly from each error region (pred xor gt, (N, H, W) bool, inside
    ``valid`` (H, W) or (N, H, W) if given): coords (N, 2) (x, y) and labels (N,): 1 on a false
    negative, 0 on a false positive, ``PAD_LABEL`` where there is no error."""
    errors = pred ^ gt
    if valid is not None:
        errors = errors & valid
    coords, found = uniform_points(errors)
    x, y = coords[:, 0].long(), coords[:, 1].long()
    on_gt = gt[torch.arange(len(gt), device=gt.device), y, x].long()
    return coords, torch.where(found, on_gt, torch.full_like(on_gt, PAD_LABEL))


def noisy_boxes(
    boxes: torch.Tensor,
    *,
    noise_ratio: float,
    max_noise: float,
    size: tuple[int, int] | torch.Tensor,
) -> torch.Tensor:
    """XYXY boxes (N, 4) with each coordinate moved by N(0, (noise_ratio * side)^2) noise,
    clamped to +-``max_noise`` px, then clipped to the image (H, W) = ``size``, one for all
    boxes or (N, 2) one per box."""
    side = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1).repeat(1, 2)
    noise = (torch.randn_like(boxes) * noise_ratio * side).clamp(-max_noise, max_noise)
    out = boxes + noise
    wh = torch.as_tensor(size, dtype=out.dtype, device=out.device).flip(-1)  # (h, w) -> (w, h)
    return torch.minimum(out.clamp(min=0), torch.cat([wh, wh], dim=-1))


def centre_points(regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre-most pixel of each region (N, H, W) bool: the one farthest from the region's
    border (L2 distance transform, first in raster order on ties). Returns coords (N, 2) (x, y)
    and found (N,) (False for an empty region)."""
    coords, found = [], []
    for region in regions.cpu().numpy().astype(np.uint8):
        padded = np.pad(region, 1)  # the image border counts as outside
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        coords.append((x, y))
        found.append(bool(region.any()))
    return (
        torch.tensor(coords, dtype=torch.float32, device=regions.device).reshape(-1, 2),
        torch.tensor(found, device=regions.device),
    )


def gt_masks_of(instances, size: tuple[int, int]) -> torch.Tensor:
    """Instances' gt_masks (BitMasks or PolygonMasks) -> (N, h, w) bool."""
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *size)
    return masks.tensor.bool()


def _box_of(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (pixel edges) of (N, H, W) bool masks."""
    return BitMasks(masks).get_bounding_boxes().tensor.to(masks.device)


def _pixels_key(image: torch.Tensor) -> str:
    """Cache key of an image: a digest of its pixels and its shape."""
    digest = hashlib.blake2b(image.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    return f"{digest}{tuple(image.shape)}"


def _tie_query_key(decoder: MaskDecoder) -> None:
    """Copy each decoder cross-attention's query projection into its key projection.

    A prompt point's token carries the Fourier encoding of its position and every image token
    the encoding of its own; the attention logit between them is ``(Wq p)^T (Wk p')``. With
    independent random ``Wq``, ``Wk`` it has no relation to the distance between p and p', and a
    model trained from scratch first spends hundreds of iterations predicting the same mask for
    every prompt (measured: no prompt dependence after 250 iterations of the tiny synthetic
    config). With ``Wk = Wq`` it is ``p^T Wq^T Wq p'``, a random projection of the encodings'
    inner product, which peaks where the positions agree: attention starts local."""
    for name, module in decoder.transformer.named_modules():
        if isinstance(module, Attention) and not name.endswith("self_attn"):
            with torch.no_grad():
                module.k_proj.weight.copy_(module.q_proj.weight)
                module.k_proj.bias.copy_(module.q_proj.bias)


class TrainableSam(Sam):
    """``Sam`` trained on a detectron2 loader's batches; see the module docstring.

    Args (besides ``Sam``'s):
        num_masks_per_image: ground-truth masks sampled per image and step (at most).
        num_correction_points: points added from error regions after the first prompt.
        num_mask_only_iterations: iterations with the previous logits as the only new prompt.
        box_probability: odds of the box (else one point) as the first prompt.
        box_noise_ratio, box_max_noise: box noise std (fraction of the side) and its bound (px).
        focal_weight, dice_weight, iou_weight: loss weights (20 : 1, and 1).
        freeze_image_encoder: no gradient to the encoder, which stays in eval mode.
        embedding_cache_size: images whose embeddings a frozen encoder keeps (0: none).
        eval_clicks: the k of the evaluation's ``click{k}`` predictions.
        box_multimask_output: a box as the first prompt trains and is evaluated as one point is
            (the best of the three multimask outputs) instead of on the single output.
        tie_query_key_init: start every cross-attention of the decoder with its key projection
            equal to its query projection (``_tie_query_key``), for training from scratch;
            weights loaded afterwards replace it.
    """

    def __init__(
        self,
        *,
        image_encoder: SamImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        num_masks_per_image: int = 64,
        num_correction_points: int = 8,
        num_mask_only_iterations: int = 2,
        box_probability: float = 0.5,
        box_noise_ratio: float = 0.1,
        box_max_noise: float = 20.0,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        freeze_image_encoder: bool = False,
        embedding_cache_size: int = 0,
        eval_clicks: Sequence[int] = (1, 3, 5),
        box_multimask_output: bool = False,
        tie_query_key_init: bool = False,
    ) -> None:
        super().__init__(
            image_encoder=image_encoder,
            prompt_encoder=prompt_encoder,
            mask_decoder=mask_decoder,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )
        if embedding_cache_size and not freeze_image_encoder:
            raise ValueError("embedding_cache_size needs freeze_image_encoder=True")
        self.num_masks_per_image = num_masks_per_image
        self.num_correction_points = num_correction_points
        self.num_mask_only_iterations = num_mask_only_iterations
        self.box_probability = box_probability
        self.box_noise_ratio = box_noise_ratio
        self.box_max_noise = box_max_noise
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.iou_weight = iou_weight
        self.freeze_image_encoder = freeze_image_encoder
        self.embedding_cache_size = embedding_cache_size
        self.eval_clicks = tuple(sorted(eval_clicks))
        self.box_multimask_output = box_multimask_output
        self._cache: dict[str, torch.Tensor] = {}
        if freeze_image_encoder:
            self.image_encoder.requires_grad_(False)
        if tie_query_key_init:
            _tie_query_key(self.mask_decoder)

    def train(self, mode: bool = True) -> TrainableSam:
        super().train(mode)
        if self.freeze_image_encoder:
            self.image_encoder.eval()  # no drop path on a fixed encoder
        return self

    # -- images -> embeddings ------------------------------------------------------------------

    def embed(self, images: list[torch.Tensor]) -> torch.Tensor:
        """(3, h, w) uint8 images -> (B, C, S, S) embeddings (cached when frozen)."""
        if not self.freeze_image_encoder:
            x = torch.stack([self.preprocess(i.to(self.device).float()) for i in images])
            return self.image_encoder(x)
        keys = [_pixels_key(i) for i in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        computed = {}
        if missing:
            x = torch.stack([self.preprocess(images[i].to(self.device).float()) for i in missing])
            with torch.no_grad():
                out = self.image_encoder(x).float()
            for i, e in zip(missing, out, strict=True):
                computed[keys[i]] = e
                if len(self._cache) < self.embedding_cache_size:
                    self._cache[keys[i]] = e
        return torch.stack([computed.get(k, self._cache.get(k)) for k in keys])

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:  # noqa: D102 (module doc)
        images = [x["image"] for x in batched_inputs]
        embeddings = self.embed(images)
        if self.training:
            return self.losses(batched_inputs, embeddings)
        with torch.no_grad():
            return [
                self.predict_instances(x, e)
                for x, e in zip(batched_inputs, embeddings, strict=True)
            ]

    # -- one decoder pass ------------------------------------------------------------------------

    def decode(
        self,
        embedding: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four outputs for N prompts, on one image or each on its own.

        embedding (C, S, S) shared by the prompts, or (N, C, S, S) one per prompt; coords
        (N, P, 2) (x, y) pixels of the padded input; labels (N, P) (-1 pad, 0 / 1 points, 2 / 3
        box corners); mask_input (N, 1, 4S, 4S) logits or None. Returns low-res logits
        (N, 4, 4S, 4S) and IoU predictions (N, 4)."""
        pe = self.prompt_encoder
        sparse = pe.embed_points(coords, labels.long())
        n = coords.shape[0]
        if mask_input is None:
            h, w = pe.image_embedding_size
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        else:
            dense = pe.embed_masks(mask_input)
        embedding = embedding if embedding.dim() == 4 else embedding[None]
        return self.mask_decoder.predict_masks(embedding, pe.get_dense_pe(), sparse, dense)

    def _first_prompt(
        self,
        gt: torch.Tensor,
        use_box: torch.Tensor,
        size: tuple[int, int] | torch.Tensor,
        *,
        noisy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """First prompt as two tokens per mask: box corners (2, 3) or a point (1) and padding.
        Training: a uniform point, a noisy box (clipped to the image's (h, w) ``size``, or each
        mask's (N, 2)); evaluation: the centre-most point, the box."""
        boxes = _box_of(gt)
        if noisy:
            boxes = noisy_boxes(
                boxes, noise_ratio=self.box_noise_ratio, max_noise=self.box_max_noise, size=size
            )
            points, _ = uniform_points(gt)
        else:
            points, _ = centre_points(gt)
        point_tokens = torch.stack([points, torch.zeros_like(points)], dim=1)
        box_tokens = boxes.reshape(-1, 2, 2)  # n (2 2) -> n 2 2: two corners
        coords = torch.where(use_box[:, None, None], box_tokens, point_tokens)
        box_labels = torch.tensor([2, 3], device=gt.device)
        point_labels = torch.tensor([1, PAD_LABEL], device=gt.device)
        labels = torch.where(use_box[:, None], box_labels, point_labels)
        return coords, labels.expand(len(gt), 2)

    def evaluation_prompt(
        self, embedding: torch.Tensor, gt: torch.Tensor, size: tuple[int, int], *, use_box: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The evaluation's first prompt for each of the (N, h, w) ``gt`` masks (the exact box
        or the centre-most point) and the decoder's answer: coords (N, 2, 2), labels (N, 2),
        low-res logits (N, 4, 4S, 4S) and IoU predictions (N, 4) of all four outputs."""
        flags = torch.full((len(gt),), use_box, device=gt.device)
        coords, labels = self._first_prompt(gt, flags, size, noisy=False)
        logits, iou_pred = self.decode(embedding, coords, labels, None)
        return coords, labels, logits, iou_pred

    def evaluated_output(self, iou_pred: torch.Tensor, *, use_box: bool) -> torch.Tensor:
        """(N, 4) IoU predictions of a first prompt -> (N,) the output the evaluation scores: a
        box's single output (0), or, for one point and a box with ``box_multimask_output``, the
        multimask output (1-3) with the highest predicted IoU."""
        if use_box and not self.box_multimask_output:
            return torch.zeros(len(iou_pred), dtype=torch.long, device=iou_pred.device)
        return iou_pred[:, 1:].argmax(1) + 1

    def upsample_logits(
        self, low_res: torch.Tensor, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """(N, 4S, 4S) logits -> (N, h, w) logits of the resized image (padding cropped), or of
        the whole padded input (N, img_size, img_size) without ``size``."""
        square = F.interpolate(
            low_res[:, None].float(),
            (self.img_size, self.img_size),
            mode="bilinear",
            align_corners=False,
        )
        return square[:, 0] if size is None else square[:, 0, : size[0], : size[1]]

    # -- training ----------------------------------------------------------------------------------

    def _schedule(self) -> list[bool]:
        """After the first prompt: True for an iteration that adds a point, False for a
        mask-only one (the last at the end, the others at random places)."""
        schedule = [True] * self.num_correction_points
        if self.num_mask_only_iterations:
            for _ in range(self.num_mask_only_iterations - 1):
                schedule.insert(random.randint(0, len(schedule)), False)
            schedule.append(False)
        return schedule

    def losses(
        self, batched_inputs: list[dict[str, Any]], embeddings: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The masks of every image in the batch go through each decoder pass together: one
        pass for all, each mask with its own image's embedding (a per-image loop ran the small
        decoder's ops once per image, 4x their count at batch 4, which dominated the step)."""
        gts, owners, sizes = [], [], []
        for i, record in enumerate(batched_inputs):
            h, w = record["image"].shape[-2:]
            gt = gt_masks_of(record["instances"], (h, w)).to(self.device)
            gt = gt[gt.flatten(1).any(1)]
            gt = gt[torch.randperm(len(gt), device=gt.device)[: self.num_masks_per_image]]
            gts.append(F.pad(gt, (0, self.img_size - w, 0, self.img_size - h)))
            owners.append(torch.full((len(gt),), i, device=self.device))
            sizes.append(torch.tensor([[h, w]] * len(gt), device=self.device).reshape(-1, 2))
        gt, owner, size = torch.cat(gts), torch.cat(owners), torch.cat(sizes)  # gt: N S' S'
        totals = {"loss_mask_focal": [], "loss_mask_dice": [], "loss_iou": []}
        if len(gt) == 0:  # no mask in the batch: zero losses that keep the graph
            zero = sum(p.sum() * 0 for p in self.parameters() if p.requires_grad)
            return {name: zero for name in totals}
        # each mask's image without the padding: (N, S', S')
        pixels = torch.arange(self.img_size, device=self.device)
        inside_height = pixels[None, :, None] < size[:, 0, None, None]
        valid = inside_height & (pixels[None, None, :] < size[:, 1, None, None])
        low = self.prompt_encoder.mask_input_size
        target = F.interpolate(gt[:, None].float(), low, mode="area")[:, 0]
        target_bool = target > 0.5
        embedding = embeddings[owner]  # (N, C, S, S)
        rows = torch.arange(len(gt), device=gt.device)
        use_box = torch.rand(len(gt), device=gt.device) < self.box_probability
        coords, labels = self._first_prompt(gt, use_box, size, noisy=True)
        mask_input = None
        for step, adds_point in enumerate([True] + self._schedule()):
            if step > 0 and adds_point:
                pred = self.upsample_logits(mask_input[:, 0]) > self.mask_threshold
                point, label = error_points(pred, gt, valid)
                coords = torch.cat([coords, point[:, None]], dim=1)
                labels = torch.cat([labels, label[:, None]], dim=1)
            logits, iou_pred = self.decode(embedding, coords, labels, mask_input)
            if step == 0:  # one point: the three multimask outputs; a box: see the class
                single = use_box & (not self.box_multimask_output)
                used = torch.stack([single] + [~single] * 3, dim=1)
            else:  # several prompts: the single output
                logits, iou_pred = logits[:, :1], iou_pred[:, :1]
                used = torch.ones_like(iou_pred, dtype=torch.bool)
            expanded = target[:, None].expand_as(logits)
            focal = sigmoid_focal_loss(logits, expanded)
            dice = dice_loss(logits, expanded)
            loss = self.focal_weight * focal + self.dice_weight * dice
            best = select_min_loss(loss.masked_fill(~used, float("inf")))
            iou = mask_iou(logits.detach() > self.mask_threshold, target_bool[:, None])
            iou_error = ((iou_pred.float() - iou) ** 2 * used).sum(1) / used.sum(1)
            totals["loss_mask_focal"].append(self.focal_weight * focal[rows, best])
            totals["loss_mask_dice"].append(self.dice_weight * dice[rows, best])
            totals["loss_iou"].append(self.iou_weight * iou_error)
            mask_input = logits[rows, best][:, None].detach()
        return {name: torch.cat(values).mean() for name, values in totals.items()}

    # -- evaluation --------------------------------------------------------------------------------

    def predict_instances(self, record: dict[str, Any], embedding: torch.Tensor) -> dict[str, Any]:
        """Masks of every ground-truth instance for the evaluation prompts (module docstring):
        ``{"sam": {"box": (N, h, w), "point": ..., "click{k}": ..., "prompts": {...}}}``."""
        size = tuple(record["image"].shape[-2:])
        gt = gt_masks_of(record["instances"], size).to(self.device)
        results: dict[str, Any] = {}
        prompts: dict[str, torch.Tensor] = {}
        n = len(gt)
        if n == 0:
            empty = torch.zeros(0, *size, dtype=torch.bool, device=self.device)
            names = ["box", "point"] + [f"click{k}" for k in self.eval_clicks]
            return {"sam": {**{k: empty for k in names}, "prompts": {}}}
        rows = torch.arange(n, device=gt.device)
        for name, use_box in (("box", True), ("point", False)):
            coords, labels, logits, iou_pred = self.evaluation_prompt(
                embedding, gt, size, use_box=use_box
            )
            best = self.evaluated_output(iou_pred, use_box=use_box)
            chosen = logits[rows, best]
            results[name] = self.upsample_logits(chosen, size) > self.mask_threshold
            prompts[f"{name}_coords"], prompts[f"{name}_labels"] = coords, labels
        # clicks: the centre point, then the centre-most pixel of the error region
        coords, labels = prompts["point_coords"], prompts["point_labels"]
        mask_input = logits[rows, best][:, None]  # the point prediction's logits
        pred = results["point"]
        for k in range(1, max(self.eval_clicks, default=0) + 1):
            if k > 1:
                point, found = centre_points(pred ^ gt)
                x, y = point[:, 0].long(), point[:, 1].long()
                label = torch.where(found, gt[rows, y, x].long(), torch.full_like(x, PAD_LABEL))
                coords = torch.cat([coords, point[:, None]], dim=1)
                labels = torch.cat([labels, label[:, None]], dim=1)
                logits, _ = self.decode(embedding, coords, labels, mask_input)
                mask_input = logits[:, :1]
                pred = self.upsample_logits(logits[:, 0], size) > self.mask_threshold
            if k in self.eval_clicks:
                results[f"click{k}"] = pred
        prompts["click_coords"], prompts["click_labels"] = coords, labels
        return {"sam": {**results, "prompts": prompts}}
