"""The code MLflow runs to build the served page reader ("models from code", see pyfunc.log_model)."""

from mlflow.models import set_model

from mnist_np.serving.page_reader import PageReader

set_model(PageReader())
