"""vit_jax: Vision Transformers in JAX/Flax for research."""

from setuptools import find_packages, setup

setup(
    name="vit_jax",
    version="0.1.0",
    description="Config-driven Vision Transformer research in JAX/Flax",
    packages=find_packages(include=["vit_jax", "vit_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.13",
        "flax>=0.12,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11,<0.14",
        "ml-collections>=1.0,<2",
        "safetensors>=0.4,<1",  # timm / Hugging Face weights, NumPy API only (no torch)
        "absl-py>=2.1,<3",
        "numpy>=1.26",
        "tensorflow-cpu>=2.17,<2.23",
        "tensorflow-datasets>=4.9.6,<5",
        # tfds' etils (1.15) imports it for epath without declaring it; absent, tfds sources fail.
        "importlib-resources>=6",
        "scikit-learn>=1.4",  # bundles the 8x8 digits set: the offline default dataset
        "matplotlib>=3.8",
        "pillow>=10",
        "tqdm>=4.66",
        "tensorboard>=2.17",  # tf.summary writes event files only with it installed
    ],
    extras_require={
        # libtpu: compile for TPU topologies on any host (vit_jax.aot), or run on a TPU VM.
        "tpu": ["jax[tpu]"],
        # The AOT tool's tests compile for TPUs; pytest-xdist runs the tests on every core (-n auto).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "jax[tpu]"],
    },
)
