# Mask R-CNN, ViT-B, LVIS v1: 1203 classes, repeat-factor sampling, sigmoid CE + federated loss.
from detectron2.config import LazyCall as L
from detectron2.data.detection_utils import get_fed_loss_cls_weights
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.evaluation.lvis_evaluation import LVISEvaluator

from ..COCO.mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

dataloader.train.dataset.names = "lvis_v1_train"
dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
    repeat_factors=L(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency)(
        dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.001
    ),
    seed="${..seed}",  # the loader's: a resumed run draws the same index stream
)
dataloader.test.dataset.names = "lvis_v1_val"
dataloader.evaluator = L(LVISEvaluator)(
    dataset_name="${..test.dataset.names}",
    max_dets_per_image=300,
    output_dir="${train.output_dir}/inference",
)

model.roi_heads.num_classes = 1203
model.roi_heads.box_predictor.test_score_thresh = 0.02
model.roi_heads.box_predictor.test_topk_per_image = 300
model.roi_heads.box_predictor.use_sigmoid_ce = True
model.roi_heads.box_predictor.use_fed_loss = True
# Called by the predictor when it is built (needs the registered LVIS training set).
model.roi_heads.box_predictor.get_fed_loss_cls_weights = lambda: get_fed_loss_cls_weights(
    dataloader.train.dataset.names, 0.5
)

# 100 ep = 156250 it * 64 images / 100000 images per epoch;
# lr x0.1 at 8/9 and 26/27 of the schedule: round(156250 * 8 / 9), round(156250 * 26 / 27)
train.max_iter = 156250
train.eval_period = 30000
lr_multiplier.scheduler.milestones = [138889, 150463]
lr_multiplier.warmup_length = 250 / train.max_iter

optimizer.lr = 2e-4
