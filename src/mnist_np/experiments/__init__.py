RANK_METRIC = "kept_val_accuracy"  # validation accuracy of the weights a run kept: what sweeps rank runs by
# A run's per-epoch curves go to MLflow as epoch/train_loss, epoch/val_accuracy, ...: the UI groups a
# run's charts by the prefix before "/" and shows those sections before its "Model metrics", so the
# run's page leads with its curves, not with bar charts of its single-value totals.
CURVES = "epoch/"
# How a sweep's jobs find their parent run, their project and the Optuna study, wherever they run: set in
# each job by Hydra, from the sweep's own overrides (launching.hand_to_jobs).
PARENT_ENV = "MNIST_NP_SWEEP_PARENT_RUN_ID"
ROOT_ENV = "MNIST_NP_ROOT"
STORAGE_ENV = "MNIST_NP_OPTUNA_STORAGE"  # the Optuna study's database URL (make cluster-up sets a team's)
