RANK_METRIC = "kept_val_accuracy"  # validation accuracy of the weights a run kept: what sweeps rank runs by
