from pathlib import Path

from setuptools import find_packages, setup

version = {}
for line in Path('rtsr_arch/__init__.py').read_text().splitlines():
    if line.startswith('__version__'):
        exec(line, version)

setup(
    name='rtsr_arch',
    version=version['__version__'],
    description='Real-time 4K super-resolution networks (LRSRN, RT4KSR, ...) as a BasicSR plugin',
    long_description=Path('README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',  # tested: 3.11 (CI), 3.12 (by hand); README "Install"
    packages=find_packages(include=['rtsr_arch', 'rtsr_arch.*']),
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'pillow',
        'scikit-image',
        'tqdm',
        'matplotlib',
        'av',  # PyAV: FFmpeg's swscale (Lanczos-5) and libsvtav1/dav1d for the AIS 2024 AVIF degradation
        'safetensors',  # .safetensors checkpoints (rtsr_arch.loader)
    ],
    extras_require={
        # rtsr-export; an extra because onnxruntime and onnxruntime-gpu install the same module
        'export': ['onnx>=1.16', 'onnxruntime>=1.17'],
        # rtsr-upscale --backend tensorrt: the engine is built from the onnxruntime-checked ONNX export
        'tensorrt': ['tensorrt>=8.6', 'onnx>=1.16', 'onnxruntime>=1.17'],
        # rtsr_arch.spandrel_support: this package's architectures in spandrel-based front-ends
        'spandrel': ['spandrel'],
        # imageio-ffmpeg: the ffmpeg CLI, an independent reference for the degradation tests;
        # onnxscript: the dynamo ONNX exporter, tested as the fallback of the TorchScript one
        # spandrel: the front-ends' loader (SPAN both ways, rtsr_arch.spandrel_support)
        # pytest-xdist: `make test` runs one worker per core
        'test': ['pytest', 'pytest-xdist', 'hypothesis', 'imageio-ffmpeg', 'onnx>=1.16', 'onnxruntime>=1.17',
                 'onnxscript', 'spandrel'],
    },
    # every program is a console script over rtsr_arch.commands (tools/*.py are thin wrappers)
    entry_points={'console_scripts': [
        'rtsr-train=rtsr_arch.cli:train',
        'rtsr-test=rtsr_arch.cli:test',
        'rtsr-convert=rtsr_arch.commands.convert:main',
        'rtsr-reparam=rtsr_arch.commands.reparam:main',
        'rtsr-runtime=rtsr_arch.commands.runtime:main',
        'rtsr-degrade=rtsr_arch.commands.degrade:main',
        'rtsr-lmdb=rtsr_arch.commands.lmdb:main',
        'rtsr-upscale=rtsr_arch.commands.upscale:main',
        'rtsr-export=rtsr_arch.commands.export:main',
    ]},
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'License :: OSI Approved :: Apache Software License',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
