"""The package's command-line programs (``rtsr-convert``, ``rtsr-reparam``, ``rtsr-runtime``,
``rtsr-degrade``, ``rtsr-lmdb``, ``rtsr-upscale``, ``rtsr-export``): thin ``argparse`` layers over
library functions, sharing one error printer (:mod:`.common`)."""
