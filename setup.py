"""vitdet: plain Vision Transformer backbones for detection (ViTDet) on detectron2.

Every dependency of the project is declared here and nowhere else. detectron2 itself is not
on PyPI under its own name; ``scripts/setup_env.sh`` installs it (see README).
"""

from setuptools import find_packages, setup

setup(
    name="vitdet",
    version="0.1.0",
    description="Plain ViT backbones with a simple feature pyramid for detectron2 detectors",
    python_requires=">=3.10",
    packages=find_packages(include=["vitdet", "vitdet.*"]),
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        # detectron2's own runtime needs (it is installed without dependencies).
        "fvcore",
        "iopath>=0.1.7,<0.1.10",
        "pycocotools",
        "opencv-python-headless",
        "shapely",  # large-scale-jitter crop of polygon masks
        "cloudpickle",
        "omegaconf",
        "pyyaml",  # tools/benchmarks/mae.py reads the config.yaml a run writes
        "hydra-core>=1.1",
        "tabulate",
        "termcolor",
        "yacs",
        "matplotlib",
        "tensorboard",
        "black",
        "packaging",
        "setuptools>=77.0.3,<82",  # detectron2's model_zoo imports pkg_resources
        "tqdm",
        "Pillow",
    ],
    extras_require={
        # timm: only the reference detectron2.modeling.ViT imports it (parity tests, benchmark);
        # segment-anything: the SAM release, the reference of the SAM parity tests.
        "dev": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "import-linter",
            "ruff",
            "timm",
            "onnx",
            "onnxruntime",
            "onnxscript",
            "segment-anything==1.0",
        ],
    },
)
