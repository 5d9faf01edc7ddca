# Cascade Mask R-CNN, LVIS v1: every cascade stage gets the LVIS box-predictor settings.
from ..common.models.cascade_roi_heads import cascade_roi_heads
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

lvis_predictor = model.roi_heads.box_predictor
cascade_roi_heads.num_classes = model.roi_heads.num_classes
model.roi_heads = cascade_roi_heads
for predictor in model.roi_heads.box_predictors:
    for key in (
        "test_score_thresh",
        "test_topk_per_image",
        "use_sigmoid_ce",
        "use_fed_loss",
        "get_fed_loss_cls_weights",
    ):
        predictor[key] = lvis_predictor[key]
