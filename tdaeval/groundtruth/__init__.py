"""Gold standards built by retraining: specs, jobs, the artifact store and executors."""

from tdaeval.groundtruth.executors import Executor, LocalExecutor, ProcessExecutor, RayExecutor, get_executor, plan_batches
from tdaeval.groundtruth.further import FurtherTrainingGroundTruth, FurtherTrainingSpec, build_further_training_groundtruth, further_train
from tdaeval.groundtruth.jobs import TrainJob, derive_seed, make_train_job, run_jobs
from tdaeval.groundtruth.lds import LDSGroundTruth, LDSSpec, build_lds_groundtruth, lds_jobs, subset_masks
from tdaeval.groundtruth.loo import LOOGroundTruth, LOOSpec, build_loo_groundtruth, loo_jobs, removed_indices
from tdaeval.groundtruth.removal import RemovalContext, RemovalSpec, build_removal_context, removal_outcome
from tdaeval.groundtruth.sharding import IncompleteGroundTruth, Shard, build_mode
from tdaeval.groundtruth.store import ArtifactStore, default_cache_dir, job_key
from tdaeval.groundtruth.tail_patch import OneStepEffectSpec, OneStepEffectTruth, build_one_step_effects, one_step_effects
from tdaeval.groundtruth.truths import NO_TRUTH, EntailmentTruth, GroundTruth, LabelTruth, MaskTruth, ModelTruth, NoTruth

__all__ = [
    "OneStepEffectSpec", "OneStepEffectTruth", "build_one_step_effects", "one_step_effects",
    "ArtifactStore",
    "EntailmentTruth",
    "Executor",
    "IncompleteGroundTruth",
    "ProcessExecutor",
    "RayExecutor",
    "Shard",
    "build_mode",
    "plan_batches",
    "FurtherTrainingGroundTruth",
    "GroundTruth",
    "LabelTruth",
    "MaskTruth",
    "ModelTruth",
    "NO_TRUTH",
    "NoTruth",
    "FurtherTrainingSpec",
    "LDSGroundTruth",
    "LDSSpec",
    "LOOGroundTruth",
    "LOOSpec",
    "LocalExecutor",
    "RemovalContext",
    "RemovalSpec",
    "TrainJob",
    "build_further_training_groundtruth",
    "build_lds_groundtruth",
    "build_loo_groundtruth",
    "build_removal_context",
    "default_cache_dir",
    "derive_seed",
    "further_train",
    "get_executor",
    "job_key",
    "lds_jobs",
    "loo_jobs",
    "make_train_job",
    "removal_outcome",
    "removed_indices",
    "run_jobs",
    "subset_masks",
]
