"""``rtsr-train``'s loop: BasicSR's train pipeline with an exactly resumable data order
(:mod:`.data_order`), any process-group backend, and training curves."""
