# Instance data for training SAM with simulated prompts (vitdet.modeling.sam.training): images
# resized so that the longest side is the encoder's input (SAM's geometry; no other
# augmentation, as the paper), every instance mask kept as a bitmask (polygons and RLE alike),
# and at test time the annotations kept too: the evaluation prompts with them.
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from vitdet.data.loader import build_resumable_train_loader
from vitdet.data.mapper import DetectionMapper
from vitdet.sam.evaluation import PromptedMaskEvaluator

image_size = 1024  # == model.image_encoder.img_size (tested)

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train._target_ = build_resumable_train_loader
dataloader.train.seed = "${train.seed}"
dataloader.train.grad_accum_steps = "${train.grad_accum_steps}"
dataloader.train.max_unreadable_fraction = 0.01
dataloader.train.mapper = L(DetectionMapper)(
    is_train=True,
    # short edge to S, then the long edge capped at S: the longest side is S
    augmentations=[L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)],
    image_format="RGB",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)
dataloader.train.total_batch_size = 16

dataloader.test.mapper = L(DetectionMapper)(
    is_train=False,
    keep_annotations=True,
    augmentations=[L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)],
    image_format="RGB",
    use_instance_mask=True,
    instance_mask_format="bitmask",
)
dataloader.evaluator = L(PromptedMaskEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/prompts",
    num_pictures=4,
)
