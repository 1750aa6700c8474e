"""The code MLflow runs to build the served model ("models from code", see serving.log_model).

Logged as a file instead of a pickled object, so loading the model never unpickles code.
"""

from mlflow.models import set_model

from mnist_np.serving.pyfunc import DigitModel

set_model(DigitModel())
