# COCO instance segmentation with large-scale jitter (LSJ) at 1024 px.
# Starts from detectron2's common COCO loaders and names what runs instead: the resumable
# training loader and the mapper that reads images with this project's reader.
import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from vitdet.data.loader import build_resumable_train_loader
from vitdet.data.mapper import DetectionMapper

image_size = 1024  # == ViT img_size == pyramid square_pad (tested)

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
# Batches at iteration i depend only on (seed, i): a resumed run sees what an uninterrupted
# one sees. The runner tells the loader its start iteration.
dataloader.train._target_ = build_resumable_train_loader
dataloader.train.seed = "${train.seed}"
dataloader.train.grad_accum_steps = "${train.grad_accum_steps}"
# Unreadable images are skipped, named in the log and counted (metrics: data/unreadable_images)
# up to this fraction of the training set; beyond it training stops with an error.
dataloader.train.max_unreadable_fraction = 0.01
dataloader.train.mapper._target_ = DetectionMapper
dataloader.train.mapper.augmentations = [
    L(T.RandomFlip)(horizontal=True),  # flip first
    L(T.ResizeScale)(
        min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size
    ),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.recompute_boxes = True  # boxes from masks after the crop
dataloader.train.total_batch_size = 64

dataloader.test.mapper._target_ = DetectionMapper  # image_format: the training mapper's
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size),
]
# Results json kept with the run; the official pycocotools COCOeval (not detectron2's C++ one).
dataloader.evaluator.output_dir = "${train.output_dir}/inference"
dataloader.evaluator.use_fast_impl = False
