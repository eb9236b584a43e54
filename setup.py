"""Packaging for the collective-communication engine.

Extras:
  mpi       mpi4py 4.x and the `mpich` wheel, so a fresh machine needs no system MPI
            (skip it if you already have an MPI and an mpi4py built against it)
  test      pytest, ruff (the linter the test command runs) and what the test-suite uses
            (ml_dtypes: the bfloat16 dtype, optional at run time; torch: the PyTorch
            backend's tests). torch is pinned to exactly 2.13.0, the CPU build this
            project is tested with: any looser spec lets pip pick a multi-GB CUDA build
  torch     torch alone, same pin, for `import collectives.pytorch` (backend "collectives")
  examples  scikit-learn (the bundled digits data set) and matplotlib (plots)
  gpu       CuPy 13 for CUDA 12 (GPU buffers and the custom kernels) and NVIDIA's NVRTC,
            runtime and NCCL wheels, so a machine with only a driver compiles the kernels
            (kernels/wheels.py loads them by path: no toolkit, no LD_LIBRARY_PATH).
            CuPy is pinned to 13.x, the version whose compile path (-ftz=true appended,
            disk cache rules) the kernels and tests were checked against.
            `python -m kernels` says what a machine has and compile-tests the kernels.
"""
from setuptools import find_packages, setup

setup(
    name="collectives-engine",
    version="0.1.0",
    description="A from-scratch collective-communication engine (ring, tree, recursive doubling, "
                "Rabenseifner) over MPI point-to-point, with a small autograd library for "
                "data- and tensor-parallel training.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["collectives", "collectives.*", "kernels", "kernels.*",
                                    "nn", "nn.*", "bench", "bench.*"]),
    package_data={"kernels": ["*.cu", "*.cuh"]},
    python_requires=">=3.9",
    install_requires=["numpy>=1.24"],
    extras_require={
        "mpi": ["mpi4py>=4,<5", "mpich"],
        "test": ["pytest>=7", "pytest-timeout", "hypothesis", "scikit-learn", "matplotlib", "ruff",
                 "ml_dtypes", "torch==2.13.0"],
        "torch": ["torch==2.13.0"],
        "examples": ["scikit-learn", "matplotlib"],
        "gpu": ["cupy-cuda12x>=13.6,<14", "nvidia-cuda-nvrtc-cu12>=12.0,<13",
                "nvidia-cuda-runtime-cu12>=12.0,<13", "nvidia-nccl-cu12>=2.16,<3"],
    },
)
