"""synthjax: synthetic data in LLM pretraining, studied with JAX/Flax."""
from setuptools import find_packages, setup

# Every version pinned: this set resolves together with Apache Beam's protobuf/pyarrow needs
# (see the design notes), so the data path can grow onto Beam without a re-pin.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array-record==0.8.6",
    "gin-config==0.5.0",
    "numpy==2.4.6",
    "protobuf==6.33.6",
    "pyarrow==25.0.1",
    "sentencepiece==0.2.1",
    "safetensors==0.8.0",
    "gguf==0.19.0",
    "tokenizers==0.23.3",
    "scipy==1.17.1",
    "matplotlib==3.11.2",
    "tensorboard==2.21.0",
    "absl-py==2.5.1",
    "tqdm==4.70.1",
    "filelock==4.3.1",  # JAX's compilation cache locks its folder (synthjax/compile_cache.py)
    # Data at scale: tokenization on Beam; every path through fsspec (gcsfs for gs://).
    "apache-beam==2.77.0",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
]

EXTRAS = {
    # transformers + torch are the reference the tests compare against, never a runtime need.
    "test": [
        "pytest==9.0.3",
        # Two test processes (.ci/run): run in one, the suite kept 1.15 of 2 cores busy (user
        # time over wall time); subprocesses starting up and Python are one thread.
        "pytest-xdist==3.8.0",
        "torch==2.13.0",
        "transformers==5.23.0",
        "accelerate==1.15.0",
        # A GCS server on loopback for the object-store tests.
        "gcp-storage-emulator==2026.7.19",
    ],
}

setup(
    name="synthjax",
    version="0.1.0",
    description="Study synthetic data in LLM pretraining: generate, mix, train, fit, report.",
    packages=find_packages(include=["synthjax", "synthjax.*"]),
    python_requires=">=3.11,<3.12",
    package_data={"synthjax.generate": ["templates/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
