"""The user's path: adapt on a folder of images, save/load the adapted model, plan against a device,
export to ONNX/TorchScript. Importing this package is cheap; onnx is only needed for export."""
from .adapted import AdaptedModel, classify, load_adapted, save_adapted
from .export import ScoringModel, export_model, export_onnx, export_torchscript
from .images import LabeledImages, load_class_folder, load_images
from .session import Budgets, adapt_to_support, load_task_folders, resolve_budgets

__all__ = ["AdaptedModel", "classify", "load_adapted", "save_adapted", "ScoringModel", "export_model",
           "export_onnx", "export_torchscript", "LabeledImages", "load_class_folder", "load_images", "Budgets",
           "adapt_to_support", "load_task_folders", "resolve_budgets"]
