"""The offline stage: supervised pretraining, episodic meta-training (single process or
torch.distributed), resumable runs, and None-accuracy evaluation of checkpoints."""
from .schedule import warmup_cosine_lr
from .episodes import EpisodeSource, ImageEpisodes, TensorEpisodes, episode_seed, sample_episode
from .evaluate import AccuracySummary, evaluate_checkpoints, evaluate_none, format_table, none_accuracy, summarize
from .loop import TrainResult
from .metatrain import MetaTrainConfig, meta_train, run_metatrain
from .pretrain import PretrainConfig, pretrain, run_pretrain

__all__ = [
    "warmup_cosine_lr",
    "EpisodeSource", "ImageEpisodes", "TensorEpisodes", "episode_seed", "sample_episode",
    "AccuracySummary", "evaluate_checkpoints", "evaluate_none", "format_table", "none_accuracy", "summarize",
    "MetaTrainConfig", "TrainResult", "meta_train", "run_metatrain",
    "PretrainConfig", "pretrain", "run_pretrain",
]
